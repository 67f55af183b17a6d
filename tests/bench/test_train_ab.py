"""bench/train.py --before: a child runs another commit's model package, and nothing of the working tree's."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import sys
sys.path.insert(0, {repo!r})
from bench.train import heap_for_training, optimizer_for, use_model_package
use_model_package({model_dir!r})
import transfertraj.model.transfertraj as tt
print(tt.__file__)
try:
    import transfertraj.model.heap
    print("heap found")
except ModuleNotFoundError:
    print("no heap")
with heap_for_training() as kept:
    print(kept)
"""


def test_before_package_is_read_from_its_directory_only(tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(REPO / "model", model_dir, ignore=shutil.ignore_patterns("__pycache__"))
    (model_dir / "heap.py").unlink()  # an older commit: no model/heap.py
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(repo=str(REPO), model_dir=str(model_dir))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[0] == str(model_dir / "transfertraj.py")
    assert out[1:] == ["no", "heap", "False"]  # not the working tree's module, and glibc's defaults
