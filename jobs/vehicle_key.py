"""Vehicle ids are personal data: silver and everything after it carry a keyed hash instead.

The key comes from TRANSFERTRAJ_VEHICLE_KEY, else from the secrets file <home>/secrets/vehicle_key,
which is created (random, mode 600) on first use. It is never committed: the data root is outside the
repository's tracked files. Keep the key stable: a new key gives every vehicle a new hash.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

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


def vehicle_keys(vehicle_ids: pa.Array, key: str) -> pa.Array:
    """The keyed hash of each vehicle id, sha256(key || ':' || sha256(key || ':' || id)) in hex, first 32
    characters; null for a null id. Made in the Arrow worker that writes silver (jobs/clean_trips.silver_rows):
    each distinct id hashed once (a delivery has a few thousand vehicles and hundreds of thousands of trips).
    Keep the formula: the lake's earlier rows were hashed by it (a test holds it against Spark's sha2)."""
    encoded = pc.dictionary_encode(vehicle_ids)
    salt = (key + ":").encode()

    def one(v: str | None) -> str | None:
        if v is None:
            return None
        inner = hashlib.sha256(salt + v.encode()).hexdigest()
        return hashlib.sha256(salt + inner.encode()).hexdigest()[:32]

    hashed = pa.array([one(v) for v in encoded.dictionary.to_pylist()], pa.string())
    return hashed.take(encoded.indices)
