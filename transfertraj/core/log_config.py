"""Logging configured once, for the CLI, the jobs and the DAG tasks.

Level from --log-level or TRANSFERTRAJ_LOG_LEVEL (default INFO). py4j and Spark's Python side are
kept at WARNING so the log says what the pipeline did, not what the JVM bridge did.
"""

from __future__ import annotations

import logging
import os

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(level: str | None = None) -> None:
    level = (level or os.environ.get("TRANSFERTRAJ_LOG_LEVEL", "INFO")).upper()
    root = logging.getLogger()
    if not any(getattr(h, "_transfertraj", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
        handler._transfertraj = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("py4j", "pyspark", "urllib3", "matplotlib", "fiona", "pyogrio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
