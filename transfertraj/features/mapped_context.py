"""A city's context unpacked once per version for the jobs' workers: arrays that numpy maps, the POI index built.

    folder = unpack_context(npz)          # on the driver, once per context version (about 2 s for Porto)
    ctx, index = map_context(folder)      # in every Python worker: milliseconds, the pages shared by the OS

The compact NPZ (features.context.save_city_context) is what a model carries and what a cluster's
executors are sent; every Python worker that opened it spent 0.9 s inflating Porto's lattice and 1.2 s
building the POI index, a fixed 2 s per worker and job: a fifth of featurizing 10 M points on 2 cores
(issue #18's profile). Here each array is an uncompressed .npy file beside the NPZ, the index's arrays
too, so a worker maps them (np.load(mmap_mode="r")) and the workers of a host read one copy of the
pages from the page cache instead of holding one copy each. The values are the NPZ's (the float16 road
lengths and distances widened to float32, which is exact), and the features the same bit for bit
(tests/features/test_mapped_context.py).

A folder is written under a temporary name and renamed into place (a reader never sees half of one), and
is tied to its NPZ by the NPZ's size and modification time (meta.json): a rebuilt NPZ gets a new folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from transfertraj.features.context import CityContext, PoiIndex, RoadLattice, load_city_context, poi_index

FORMAT = "transfertraj-mapped-context-2"  # 2: float16 lattice arrays stored as float32
LATTICE_ARRAYS = ("road_m", "nearest_m", "nearest_class", "road_covered", "poi_covered")
INDEX_ARRAYS = ("inner", "indptr", "edge_x", "edge_y", "edge_cat")


def mapped_folder(npz: str | Path) -> Path:
    """Where unpack_context puts the folder of an NPZ: beside it, `<name>.mapped`."""
    npz = Path(npz)
    return npz.with_name(npz.stem + ".mapped")


def _stamp(npz: Path) -> dict:
    st = npz.stat()
    return {"npz": npz.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def is_unpacked(npz: str | Path) -> bool:
    """Whether the folder of this NPZ is there and made from this very file."""
    meta = mapped_folder(npz) / "meta.json"
    try:
        m = json.loads(meta.read_text())
    except (OSError, ValueError):
        return False
    return m.get("format") == FORMAT and m.get("source") == _stamp(Path(npz))


def unpack_context(npz: str | Path) -> Path:
    """The mapped folder of a context NPZ, written first when absent or made from another file. Returns it."""
    npz = Path(npz)
    folder = mapped_folder(npz)
    if is_unpacked(npz):
        return folder
    ctx = load_city_context(npz)
    index = poi_index(ctx)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", suffix=".tmp", dir=folder.parent))
    try:
        lat = ctx.lattice
        for name in LATTICE_ARRAYS:
            values = getattr(lat, name)
            if values.dtype == np.float16:  # widened, exactly: numpy converts half floats a value at a time
                values = values.astype(np.float32)  # (the bilinear gathers ran 30 % slower on them)
            np.save(tmp / f"{name}.npy", values)
        np.save(tmp / "poi_xy.npy", ctx.poi_xy)
        np.save(tmp / "poi_category.npy", ctx.poi_category)
        meta = {
            "format": FORMAT,
            "source": _stamp(npz),
            "taxonomy_version": ctx.taxonomy_version,
            "lattice": {"x0": lat.x0, "y0": lat.y0, "step": lat.step, "phi_m": lat.phi_m},
            "index": None,
        }
        if index is not None:
            for name in INDEX_ARRAYS:
                np.save(tmp / f"index_{name}.npy", getattr(index, name))
            meta["index"] = {"x0": index.x0, "y0": index.y0, "cell": index.cell, "phi_m": index.phi_m}
            meta["index"]["shape"] = list(index.shape)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if folder.exists():  # made from an earlier NPZ of the same name: replaced
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError:  # another job renamed its own copy into place first: that one is used
            if not is_unpacked(npz):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def map_context(folder: str | Path) -> tuple[CityContext, PoiIndex | None]:
    """(the CityContext, its POI index) of a folder unpack_context wrote, every array memory-mapped
    read-only. Raises FileNotFoundError where the folder is not there (a worker that cannot see it)."""
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{folder} is not a {FORMAT} folder (format {meta.get('format')})")

    def load(name):  # a plain ndarray over the mapping: np.memmap's own indexing runs Python per call
        return np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False).view(np.ndarray)

    lattice = RoadLattice(**meta["lattice"], **{name: load(name) for name in LATTICE_ARRAYS})
    ctx = CityContext(lattice, load("poi_xy"), load("poi_category"), meta["taxonomy_version"])
    index = None
    if meta["index"] is not None:
        scalars = dict(meta["index"], shape=tuple(meta["index"]["shape"]))
        index = PoiIndex(**scalars, **{name: load(f"index_{name}") for name in INDEX_ARRAYS})
    return ctx, index
