"""The fixed vocabularies of the context modalities: POI categories, road classes and their sizes.

    from transfertraj.jobs.context_taxonomy import context_dims, TAXONOMY_VERSION
    dims = context_dims()       # ContextDims(P=10, R=17, poi_categories=(...), road_classes=(...), ...)

Everything that records or checks the shape of the POI and road vectors (the features table's metadata,
model checkpoints) takes it from `context_dims()`; change a mapping here and bump TAXONOMY_VERSION, so a
model trained on one version refuses features built with another.

POI taxonomy (poi-v1): an OSM feature's tags are matched against RULES in order; the first match wins.
Street furniture (benches, bins, vending machines, ...) is not a point of interest and is dropped.
Anything else tagged amenity/shop/tourism/leisure/office/public_transport/healthcare lands in `other`.

Road classes: drivable `highway` values only (footways, steps, cycleways, paths, tracks are not roads
for a car); `*_link` counts as its parent class, living_street as residential; unclassified, road and
busway go to `other`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# The vocabulary (names, sizes, version) is stated once in transfertraj.features.taxonomy, which the
# served model reads without the pipeline; the rules below map OSM tags into it.
from transfertraj.features.taxonomy import (  # noqa: F401 (re-exported for the pipeline)
    N_POI,
    N_ROAD,
    POI_CATEGORIES,
    ROAD_CLASSES,
    TAXONOMY_VERSION,
    covered_mask,
)

# OSM keys that make a feature a POI candidate; the extraction asks osmnx for exactly these.
POI_TAG_KEYS: tuple[str, ...] = ("amenity", "shop", "tourism", "leisure", "office", "public_transport", "healthcare")

DRIVABLE_HIGHWAYS = frozenset(
    {
        "motorway", "motorway_link", "trunk", "trunk_link", "primary", "primary_link",
        "secondary", "secondary_link", "tertiary", "tertiary_link", "unclassified",
        "residential", "living_street", "service", "road", "busway",
    }
)  # fmt: skip

# Street furniture and utilities: mapped densely in some cities and not at all in others, they would
# make the POI counts measure mapping zeal rather than places people go to.
STREET_FURNITURE = frozenset(
    {
        "bench", "waste_basket", "waste_disposal", "recycling", "vending_machine", "drinking_water",
        "post_box", "letter_box", "clock", "telephone", "grit_bin", "bbq", "shower", "water_point",
        "hunting_stand", "watering_place", "ticket_validator", "lounger", "give_box",
    }
)  # fmt: skip

# (key, values or None for any value, category): first match wins, so specific amenities come before
# the catch-all keys.
RULES: tuple[tuple[str, frozenset[str] | None, str], ...] = (
    ("amenity", frozenset({"restaurant", "cafe", "fast_food", "bar", "pub", "food_court", "ice_cream",
                           "biergarten", "canteen"}), "food"),
    ("amenity", frozenset({"parking", "parking_space", "parking_entrance", "motorcycle_parking",
                           "bicycle_parking"}), "parking"),
    ("amenity", frozenset({"bus_station", "taxi", "ferry_terminal", "fuel", "charging_station",
                           "car_rental", "car_sharing", "bicycle_rental", "boat_rental", "car_wash"}), "transport"),
    ("amenity", frozenset({"school", "university", "college", "kindergarten", "library", "language_school",
                           "driving_school", "music_school", "training", "childcare", "research_institute"}),
     "education"),
    ("amenity", frozenset({"hospital", "clinic", "doctors", "dentist", "pharmacy", "veterinary",
                           "nursing_home", "social_facility"}), "health"),
    ("amenity", frozenset({"bank", "atm", "post_office", "townhall", "police", "courthouse", "fire_station",
                           "embassy", "bureau_de_change", "money_transfer", "coworking_space", "public_building",
                           "parcel_locker", "payment_terminal"}), "office_services"),
    ("amenity", frozenset({"theatre", "cinema", "arts_centre", "nightclub", "casino", "community_centre",
                           "events_venue", "fountain", "planetarium", "exhibition_centre", "conference_centre"}),
     "leisure_tourism"),
    ("amenity", frozenset({"marketplace"}), "shop"),
    ("healthcare", None, "health"),
    ("shop", None, "shop"),
    ("office", None, "office_services"),
    ("tourism", None, "leisure_tourism"),
    ("leisure", None, "leisure_tourism"),
    ("public_transport", None, "transport"),
)  # fmt: skip

_NO_VALUES = {"", "no", "none", "nan"}


@dataclass(frozen=True)
class ContextDims:
    taxonomy_version: str
    poi_categories: tuple[str, ...]
    road_classes: tuple[str, ...]
    P: int  # length of the `poi` vector
    R: int  # length of the `road` vector

    @property
    def poi_names(self) -> tuple[str, ...]:
        return (*self.poi_categories, "total")

    @property
    def road_names(self) -> tuple[str, ...]:
        return (
            *(f"len_{c}" for c in self.road_classes),
            "nearest_dist",
            *(f"nearest_is_{c}" for c in self.road_classes),
        )


def context_dims() -> ContextDims:
    return ContextDims(TAXONOMY_VERSION, POI_CATEGORIES, ROAD_CLASSES, N_POI, N_ROAD)


def _value(tags: Mapping[str, object], key: str) -> str | None:
    value = tags.get(key)
    if value is None or (isinstance(value, float) and value != value):  # NaN from pandas
        return None
    text = str(value).strip().lower()
    return None if text in _NO_VALUES else text


def poi_category(tags: Mapping[str, object]) -> str | None:
    """Category of one OSM feature from its tags; None when it is not a POI (no POI key, street furniture)."""
    for key, values, category in RULES:
        value = _value(tags, key)
        if value is not None and (values is None or value in values):
            return category
    present = [v for v in (_value(tags, k) for k in POI_TAG_KEYS) if v is not None]
    if not present or all(v in STREET_FURNITURE for v in present):
        return None
    return "other"


def road_class(highway: object) -> str | None:
    """Road class of one `highway` value; None when not drivable. A list (merged ways) takes its first."""
    if isinstance(highway, (list, tuple)):
        highway = highway[0] if highway else None
    if highway is None or (isinstance(highway, float) and highway != highway):
        return None
    value = str(highway).strip().lower()
    if value not in DRIVABLE_HIGHWAYS:
        return None
    value = value.removesuffix("_link")
    if value == "living_street":
        return "residential"
    return value if value in ROAD_CLASSES else "other"
