"""Vehicle ids are personal data: silver and everything after it carry a keyed hash instead.

The key comes from TRANSFERTRAJ_VEHICLE_KEY, else from the secrets file <home>/secrets/vehicle_key,
which is created (random, mode 600) on first use. It is never committed: the data root is outside the
repository's tracked files. Keep the key stable: a new key gives every vehicle a new hash.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pyspark.sql import Column
from pyspark.sql import functions as F

from transfertraj.core.settings import Settings

ENV_VAR = "TRANSFERTRAJ_VEHICLE_KEY"


def secrets_file(settings: Settings) -> Path:
    return settings.home / "secrets" / "vehicle_key"


def load_vehicle_key(settings: Settings) -> str:
    key = os.environ.get(ENV_VAR)
    if key:
        return key
    path = secrets_file(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip()


def vehicle_key_column(vehicle_id: Column, key: str) -> Column:
    """HMAC-style keyed hash, sha256(key || ':' || sha256(key || ':' || id)), first 32 hex chars."""
    inner = F.sha2(F.concat(F.lit(key + ":"), vehicle_id), 256)
    return F.substring(F.sha2(F.concat(F.lit(key + ":"), inner), 256), 1, 32)
