"""transfertraj: learn vehicle trajectories once, transfer them to new cities and tasks.

The shared pieces live here: settings (where data, caches and services are), city configuration,
logging and the `transfertraj` command line. The pipeline itself lives in `jobs/` (Spark),
`feature_store/` (Delta tables), `model/` (PyTorch) and `dags/` (Airflow).
"""

__version__ = "0.1.0"
