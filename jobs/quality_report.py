"""A data-quality report per ingestion run, as a PNG and an HTML page a person can open.

    transfertraj ingest --city porto --date 2013-07-01      # writes it after the run
    path = write_quality_report(spark, city, "2013-07-01", settings)
    -> <home>/reports/<city>/<date>/ingest_quality.html (+ ingest_quality.png)

It shows the latest run's accounting (rows and points by reason), the distributions of trajectory
length, duration and speed, and a map of accepted points.
"""

from __future__ import annotations

import html
import logging
import math
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from transfertraj.core.city_config import CityConfig
from transfertraj.core.settings import Settings
from transfertraj.feature_store.delta_io import read_table, table_exists
from transfertraj.feature_store.tables import table_path

log = logging.getLogger(__name__)
MAP_SAMPLE_POINTS = 40_000


def _latest_run(spark: SparkSession, city: str, date: str, settings: Settings) -> dict:
    runs, _ = read_table(spark, table_path(settings, "runs"), where={"city": city})
    ended = (F.col("date") == date) & (F.col("job") == "ingest") & (F.col("status") != "running")
    row = runs.where(ended).orderBy(F.col("finished_at").desc()).first()
    if row is None:
        raise LookupError(f"no ingest run recorded for {city} {date}")
    return row.asDict(recursive=True)


def write_quality_report(spark: SparkSession, city: CityConfig, date: str, settings: Settings) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = _latest_run(spark, city.name, date, settings)
    out_dir = settings.reports / city.name / date
    out_dir.mkdir(parents=True, exist_ok=True)
    trips = None
    silver_path = table_path(settings, "silver")
    if run["status"] == "published" and table_exists(spark, silver_path):
        silver, _ = read_table(
            spark, silver_path, version=run["silver_version"], where={"city": city.name, "date": date}
        )
        trips = silver.select(
            "n_points",
            "duration_s",
            "length_m",
            (F.col("length_m") / F.greatest(F.col("duration_s"), F.lit(1)) * 3.6).alias("speed_kmh"),
        ).toPandas()
        total = max(int(run["points_kept"]), 1)
        points = (
            silver.select(F.explode(F.arrays_zip("lon", "lat")).alias("p"))
            .sample(fraction=min(1.0, MAP_SAMPLE_POINTS / total), seed=7)
            .select("p.lon", "p.lat")
            .toPandas()
        )

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    fig.suptitle(f"{city.name} {date}: ingestion quality ({run['status']})", fontsize=14)
    ax = axes[0, 0]
    reasons = {
        **{f"row: {k}": v for k, v in run["rows_rejected_by_reason"].items()},
        **{f"point: {k}": v for k, v in run["points_dropped_by_reason"].items()},
    }
    if reasons:
        names = sorted(reasons, key=reasons.get)
        ax.barh(names, [reasons[n] for n in names], color="tab:red")
        ax.set_xscale("log")
    ax.set_title("rejected rows and dropped points by reason (log)")
    ax = axes[0, 1]
    ax.axis("off")
    lines = [
        f"rows read      {run['rows_read']:>10,}",
        f"  accepted     {run['rows_accepted']:>10,}",
        f"  rejected     {run['rows_rejected']:>10,}",
        f"points read    {run['points_read']:>10,}",
        f"  kept         {run['points_kept']:>10,}",
        f"  dropped      {run['points_dropped']:>10,}",
        f"trajectories   {run['trajectories_out']:>10,}",
        f"files          {run['files']:>10,}",
        "",
        f"silver version {run['silver_version']}",
        f"source licence {city.raw.licence[:40]}",
    ]
    ax.text(0, 1, "\n".join(lines), family="monospace", va="top", fontsize=11)
    if trips is not None and len(trips):
        axes[0, 2].hist(trips["n_points"], bins=40, color="tab:blue")
        axes[0, 2].set_title("points per trajectory")
        axes[1, 0].hist(trips["duration_s"] / 60, bins=40, color="tab:blue")
        axes[1, 0].set_title("duration (min)")
        axes[1, 1].hist(trips["speed_kmh"].clip(upper=150), bins=40, color="tab:blue")
        axes[1, 1].set_title("mean speed (km/h)")
        ax = axes[1, 2]
        ax.scatter(points["lon"], points["lat"], s=0.3, alpha=0.3, color="black")
        b = city.bbox
        ax.plot(
            [b.min_lon, b.max_lon, b.max_lon, b.min_lon, b.min_lon],
            [b.min_lat, b.min_lat, b.max_lat, b.max_lat, b.min_lat],
            color="tab:orange",
            lw=1,
        )
        ax.set_title(f"accepted points (sample of {len(points):,}) and the city box")
        ax.set_aspect(1 / max(0.2, math.cos(math.radians(b.centre[1]))))
    else:
        for ax in (axes[0, 2], axes[1, 0], axes[1, 1], axes[1, 2]):
            ax.axis("off")
        axes[1, 1].text(0.5, 0.5, "silver not published for this date", ha="center")
    fig.tight_layout()
    png = out_dir / "ingest_quality.png"
    fig.savefig(png, dpi=80)
    plt.close(fig)

    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td style='text-align:right'>{v:,}</td></tr>" for k, v in sorted(reasons.items())
    )
    page = f"""<!doctype html><meta charset="utf-8"><title>{city.name} {date} ingestion quality</title>
<h1>{city.name} {date}: {html.escape(run["status"])}</h1>
<p>{html.escape(run.get("message") or "")}</p>
<p>Rows read {run["rows_read"]:,} = accepted {run["rows_accepted"]:,} + rejected {run["rows_rejected"]:,}.
Points read {run["points_read"]:,} = kept {run["points_kept"]:,} + dropped {run["points_dropped"]:,}.
Trajectories out: {run["trajectories_out"]:,}. Run {run["run_id"]}.</p>
<table border=1 cellpadding=4><tr><th>reason</th><th>count</th></tr>{rows}</table>
<p><img src="ingest_quality.png" alt="quality plots"></p>
<p>Data licence: {html.escape(city.raw.licence)}</p>
"""
    page_path = out_dir / "ingest_quality.html"
    page_path.write_text(page, encoding="utf-8")
    log.info("quality report: %s", page_path)
    return page_path
