"""The sizes and names of the context vectors: POI categories, road classes, the taxonomy version.

    from transfertraj.features.taxonomy import N_POI, N_ROAD, POI_CATEGORIES, ROAD_CLASSES, TAXONOMY_VERSION

How an OSM feature maps into these names (the rules) is the pipeline's business and lives in
jobs/context_taxonomy.py, which re-exports these; serving needs only the vocabulary. Change a name
here and bump TAXONOMY_VERSION, so a model trained on one version refuses features built with another.
"""

from __future__ import annotations

TAXONOMY_VERSION = "poi-v1"

# Names shared with the city configs (`osm.poi_categories_covered`); keep them stable.
POI_CATEGORIES: tuple[str, ...] = (
    "food",
    "shop",
    "education",
    "health",
    "transport",
    "parking",
    "leisure_tourism",
    "office_services",
    "other",
)
N_POI = len(POI_CATEGORIES) + 1  # P: one log1p count per category, last = log1p(total)

ROAD_CLASSES: tuple[str, ...] = (
    "motorway",
    "trunk",
    "primary",
    "secondary",
    "tertiary",
    "residential",
    "service",
    "other",
)
# R: road length per class, scaled distance to the nearest road, one-hot class of the nearest road.
N_ROAD = 2 * len(ROAD_CLASSES) + 1


def covered_mask(categories_covered: list[str] | tuple[str, ...] | None) -> list[bool]:
    """The `poi_missing` mask (length P) of a source: True where the source does not cover a category.

    The total is missing as soon as any category is, since it would silently count those as zero."""
    if categories_covered is None:
        return [False] * N_POI
    unknown = set(categories_covered) - set(POI_CATEGORIES)
    if unknown:
        raise ValueError(f"unknown POI categories {sorted(unknown)}; {TAXONOMY_VERSION} has {list(POI_CATEGORIES)}")
    missing = [c not in categories_covered for c in POI_CATEGORIES]
    return [*missing, any(missing)]
