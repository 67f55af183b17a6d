"""Where things are: data root, caches, Spark master, MLflow and Airflow locations.

Precedence, stated once for the whole project:
    command-line flag  >  environment variable  >  city config file  >  default below.
`Settings.load(**overrides)` applies the first two levels (flags are passed as overrides); city files
only hold per-city values (see `transfertraj.core.city_config`). Nothing here reads the current working
directory: every default is an absolute path.

| setting            | environment variable            | default                                   |
|--------------------|---------------------------------|-------------------------------------------|
| home (data root)   | TRANSFERTRAJ_HOME               | ~/.local/share/transfertraj               |
| cache              | TRANSFERTRAJ_CACHE              | ~/.cache/transfertraj                     |
| spark_master       | TRANSFERTRAJ_SPARK_MASTER       | local[*]                                  |
| spark_conf         | TRANSFERTRAJ_SPARK_CONF         | "" (comma-separated key=value pairs)      |
| shuffle_partitions | TRANSFERTRAJ_SHUFFLE_PARTITIONS | 4 (sample-sized data on 2 cores)          |
| driver_memory      | TRANSFERTRAJ_DRIVER_MEMORY      | 4g                                        |
| mlflow_tracking_uri| MLFLOW_TRACKING_URI             | sqlite:///<home>/mlflow/mlflow.db         |
| airflow_home       | AIRFLOW_HOME                    | <home>/airflow                            |
| city_dirs          | TRANSFERTRAJ_CITY_DIRS          | <repo>/config/cities : <home>/config/cities |
| datasets           | TRANSFERTRAJ_DATASETS           | <repo>/../shared/data when it exists, else none |
| threads            | TRANSFERTRAJ_THREADS            | the cores this process may use (core.cores)  |
| poke_interval_s    | TRANSFERTRAJ_POKE_INTERVAL_S    | 60 (how often a DAG's sensor looks again)    |

Raw files for onboarding arrive under `<home>/incoming` (Settings.incoming); the trigger may read
nothing else, and nothing in the lake or the landing folder the pipeline writes itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

# A checkout's own files (sample data, the DAG folder) sit two levels above this module; an installed
# wheel has no such folder and needs none to load a model. The bundled city configs ship inside the
# package (`transfertraj.cities`, mapped to config/cities), so they are found either way.
REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_CITY_DIR = Path(str(resources.files("transfertraj.cities")))
# The committed multi-city base model (weights/base/README.md says what made it): what `make demo` and a
# pretraining with `init: base-weights` start from instead of random weights.
BASE_WEIGHTS = REPO_ROOT / "weights" / "base" / "transfertraj-base.pt"
# Its per-task fine-tunes (the paper's "full" variant, weights/base/README.md): transfertraj-base-<task>.pt
# for the served tasks tp, tr, od. A base registered from the committed weights carries them, so each task
# is answered (and gated) with its own.
BASE_TASK_WEIGHTS = REPO_ROOT / "weights" / "base" / "tasks"


def _parse_conf(text: str) -> dict[str, str]:
    """'a=1,b=2' -> {'a': '1', 'b': '2'}; a clear error for a pair without '='."""
    conf: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in pair:
            raise ValueError(f"TRANSFERTRAJ_SPARK_CONF: '{pair}' is not key=value")
        key, value = pair.split("=", 1)
        conf[key.strip()] = value.strip()
    return conf


def _datasets_root(value: str | None) -> Path | None:
    """TRANSFERTRAJ_DATASETS, else the workplace's shared data folder next to the checkout when present."""
    if value:
        return Path(value).expanduser().resolve()
    beside = REPO_ROOT.parent / "shared" / "data"
    return beside.resolve() if beside.is_dir() else None


@dataclass(frozen=True)
class Settings:
    home: Path
    cache: Path
    spark_master: str = "local[*]"
    spark_conf: dict[str, str] = field(default_factory=dict)
    shuffle_partitions: int = 4  # Spark's 200 (and Delta MERGE's 50) are far too many on 2 cores
    driver_memory: str = "4g"
    mlflow_tracking_uri: str = ""
    airflow_home: Path | None = None
    city_dirs: tuple[Path, ...] = ()
    datasets: Path | None = None  # root of the large real data sets (too big for the repository)
    poke_interval_s: float = 60  # sensors (onboard_city's wait for the base champion) look again this often

    @classmethod
    def load(cls, **overrides) -> Settings:
        """Defaults < environment < overrides (command-line flags). None overrides are ignored."""
        env = os.environ
        home = Path(env.get("TRANSFERTRAJ_HOME", Path.home() / ".local" / "share" / "transfertraj"))
        home = Path(overrides.pop("home", None) or home).expanduser().resolve()
        cache = Path(env.get("TRANSFERTRAJ_CACHE", Path.home() / ".cache" / "transfertraj")).expanduser()
        city_dirs_env = env.get("TRANSFERTRAJ_CITY_DIRS")
        city_dirs = (
            tuple(Path(p).expanduser() for p in city_dirs_env.split(os.pathsep) if p)
            if city_dirs_env
            else (BUNDLED_CITY_DIR, home / "config" / "cities")
        )
        settings = cls(
            home=home,
            cache=cache.resolve(),
            spark_master=env.get("TRANSFERTRAJ_SPARK_MASTER", "local[*]"),
            spark_conf=_parse_conf(env.get("TRANSFERTRAJ_SPARK_CONF", "")),
            shuffle_partitions=int(env.get("TRANSFERTRAJ_SHUFFLE_PARTITIONS", "4")),
            driver_memory=env.get("TRANSFERTRAJ_DRIVER_MEMORY", "4g"),
            mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"),
            airflow_home=Path(env.get("AIRFLOW_HOME", home / "airflow")),
            city_dirs=city_dirs,
            datasets=_datasets_root(env.get("TRANSFERTRAJ_DATASETS")),
            poke_interval_s=float(env.get("TRANSFERTRAJ_POKE_INTERVAL_S", "60")),
        )
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})

    # Folders under the data root. The feature store names its tables under `lake`.
    @property
    def incoming(self) -> Path:
        """Where raw deliveries arrive for onboarding; land_sample copies them into `landing` by date."""
        return self.home / "incoming"

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def lake(self) -> Path:
        return self.home / "lake"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    @property
    def checkpoints(self) -> Path:
        return self.home / "checkpoints"

    @property
    def ivy_dir(self) -> Path:
        """Spark's Ivy cache for the Delta jars, kept with the venv cache so later starts are offline."""
        return self.cache / "ivy"
