"""The maintenance task: OPTIMIZE and VACUUM the lake, keeping every table version a registered model records.

    from transfertraj.tasks import maintenance
    maintenance.maintain_lake(168, ["features"])
    # -> [{"table": "features", "protected_version": 3, "retention_hours": 502.0, "optimized": [], "vacuumed": 0}]

The Delta work is the lake's own (feature_store.maintenance); this task adds what only the shell
knows: which versions the registry's champions and challengers record.
"""

from __future__ import annotations

from transfertraj.core.settings import Settings
from transfertraj.tasks.spark import task_spark


def maintain_lake(min_retention_hours: float = 168.0, tables: list[str] | None = None) -> list[dict]:
    """OPTIMIZE (compaction) then VACUUM `tables` (default: every lake table), each only where the Delta
    log shows work to do (enough small files in a partition; files VACUUM would delete), keeping every file of any
    table version a registered champion or challenger records (the retention stretches back past that
    version's commit). Spark starts only when some table has work to do."""
    from transfertraj import registry
    from transfertraj.feature_store.maintenance import optimize_and_vacuum

    settings = Settings.load()
    return optimize_and_vacuum(
        lambda: task_spark(settings),  # started only if a table has files to compact or delete
        settings,
        protected=registry.protected_versions(settings),
        min_retention_hours=min_retention_hours,
        tables=tables,
    )
