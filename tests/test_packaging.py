"""The distribution: a wheel built from this checkout installs in a clean venv and `import transfertraj` works.

The wheel is built without build isolation (setuptools is in the lock) and installed with uv from its
local cache only (`--offline`: the bootstrap filled it), so the test needs no network. The clean venv
gets the base dependencies alone: no Spark, no torch, no Airflow.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UV = Path(sys.executable).parent / "uv"


def _run(*cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of this working tree, built from a copy of its source files (the build never writes
    into the checkout)."""
    src = tmp_path_factory.mktemp("src")
    files = _run("git", "-C", REPO, "ls-files", "-co", "--exclude-standard").stdout.split()
    for rel in files:
        if rel.startswith(("data/", "docs/", "tests/", "bench/")) or not (REPO / rel).is_file():
            continue
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    out = tmp_path_factory.mktemp("dist")
    # --no-build-isolation: setuptools comes from the pinned venv, nothing is downloaded.
    _run(UV, "build", "--wheel", "--no-build-isolation", "--python", sys.executable, "-o", out, src)
    (found,) = out.glob("transfertraj-*.whl")
    return found


def test_the_wheel_holds_one_namespace_and_the_city_configs(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"transfertraj", f"{wheel.name.split('-py3')[0]}.dist-info"}
    for module in (
        "transfertraj/jobs/ingest.py",
        "transfertraj/model/train.py",
        "transfertraj/feature_store/reader.py",
    ):
        assert module in names
    assert "transfertraj/cities/porto.yaml" in names
    assert not any(n.startswith(("tests/", "dags/", "bench/")) for n in names)


def test_extras_match_the_users():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(extras) == {"serve", "pipeline", "airflow", "dev"}
    base = " ".join(project["dependencies"])
    assert "deltalake" in base and "pyspark" not in base and "torch" not in base
    assert not any("pyspark" in d or "delta-spark" in d or "airflow" in d for d in extras["serve"])
    assert any(d.startswith("pytest") for d in extras["dev"]) and "pytest" not in base


@pytest.mark.slow
def test_the_wheel_installs_in_a_clean_venv_and_imports(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run(UV, "venv", "-q", "-p", sys.executable, venv)
    py = venv / "bin" / "python"
    # The lock's versions, from uv's cache only: what the bootstrap installed, nothing downloaded.
    _run(UV, "pip", "install", "-q", "--offline", "--python", py, wheel, "-c", REPO / "requirements.txt")
    out = _run(
        py,
        "-c",
        "import importlib.util, transfertraj, transfertraj.core.city_config as c, transfertraj.feature_store.reader;"
        "print(transfertraj.__file__); print(c.load_city('porto').name);"
        "print(importlib.util.find_spec('pyspark'), importlib.util.find_spec('model'))",
        cwd=tmp_path,
    ).stdout.split("\n")
    assert out[0].startswith(str(venv)) and out[1] == "porto"
    assert out[2] == "None None"  # no Spark in the base install, and no top-level `model` package


def test_this_checkouts_environment_runs_this_checkouts_code(tmp_path):
    """The base venv is shared by every checkout on the machine; ./.venv (scripts/bootstrap.sh) is this
    checkout's own, so its interpreter and console scripts import this tree from any working folder."""
    out = _run(
        sys.executable,
        "-c",
        "import transfertraj.model, transfertraj.cli; print(transfertraj.model.__file__)",
        cwd=tmp_path,
    )
    assert Path(out.stdout.strip()).is_relative_to(REPO)
    script = Path(sys.executable).parent / "transfertraj"
    assert script.read_text().splitlines()[0] == f"#!{sys.executable}"
