"""Every Delta table of the lake, by name.

    from transfertraj.feature_store.tables import TABLES, table_path
    path = table_path(settings, "silver")       # <home>/lake/silver

| table          | one row per                         | partitioned by |
|----------------|-------------------------------------|----------------|
| bronze         | landed input row, as delivered      | city, date     |
| rejects        | rejected input row or point + reason| city, date     |
| silver         | clean trajectory                    | city, date     |
| features       | model-ready trajectory              | city, date     |
| runs           | ingestion / featurization run       | city           |
| context_roads  | OSM road segment                    | city           |
| context_pois   | OSM point of interest               | city           |
| context_grid   | metric grid cell with densities     | city           |
| predictions    | trip scored by one model version    | city, date     |

`date` is the delivery date of the landing folder (see jobs/ingest), a string 'YYYY-MM-DD'.
Schemas live next to the jobs that produce the tables (jobs/schemas.py); this module only names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transfertraj.core.settings import Settings


@dataclass(frozen=True)
class Table:
    name: str
    partition_by: tuple[str, ...]
    description: str


TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table("bronze", ("city", "date"), "raw input rows as landed, one row per input row"),
        Table("rejects", ("city", "date"), "the quarantine: one row per rejected input row or point, with a reason"),
        Table("silver", ("city", "date"), "clean trajectories, one row per trajectory"),
        Table("features", ("city", "date"), "model-ready trajectories with the four point modalities"),
        Table("runs", ("city",), "one row per job run: rows read / accepted / rejected by reason"),
        Table("context_roads", ("city",), "OSM road segments in the city's metric CRS"),
        Table("context_pois", ("city",), "OSM points of interest mapped into the POI taxonomy"),
        Table("context_grid", ("city",), "metric grid cells with POI and road densities"),
        Table(
            "predictions", ("city", "date"), "a registered model's answers for a day's trips (jobs.trip_predictions)"
        ),
    )
}


def table(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table '{name}'; known: {', '.join(TABLES)}") from None


def table_path(settings: Settings, name: str) -> str:
    """Location of a table under the lake: a local path, or a URI (s3a://...) when home is one."""
    table(name)
    return str(Path(settings.lake) / name)
