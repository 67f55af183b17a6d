"""An earlier commit's code, importable as `transfertraj`, for a benchmark's before/after in one run.

    tree = code_tree("7cd80e2", work, prefix="spark@")   # work/spark@<sha>/: transfertraj/{jobs, model,
                                                         # feature_store, cities}, and the commit's bench/
    env["PYTHONPATH"] = str(tree)                        # the child and Spark's Python workers import it
    subprocess.run(cmd, env=env, cwd=tree)               # the workers put their working folder first on
                                                         # sys.path: this checkout's transfertraj/ would win

The installed package maps jobs/, model/, feature_store/ and config/cities/ into `transfertraj` (pyproject's
package-dir); the tree lays the commit's files out that way, so that a plain sys.path entry imports them
ahead of this checkout's import hook (which comes after the path finders).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_MOVED = (("jobs", "jobs"), ("model", "model"), ("feature_store", "feature_store"), ("config/cities", "cities"))


def short_sha(commit: str) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", commit], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()


def code_tree(commit: str, folder: Path, *, prefix: str = "code-") -> Path:
    """folder/<prefix><short sha of commit>, made once (module docstring)."""
    sha = short_sha(commit)
    tree = folder / f"{prefix}{sha}"
    if not (tree / "transfertraj" / "jobs").is_dir():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        parts = ["transfertraj", "jobs", "model", "feature_store", "config", "bench"]
        archive = subprocess.run(["git", "archive", sha, *parts], cwd=REPO, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        for src, dst in _MOVED:
            (tree / src).rename(tree / "transfertraj" / dst)
    return tree
