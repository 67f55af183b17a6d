"""A registered model in an environment made from its own requirements: size, and that it answers.

    .venv/bin/python bench/slim_env.py                      # about a minute with a warm uv cache
    .venv/bin/python bench/slim_env.py --keep var/slim      # keep the venvs and the model there

The model is the serving tests' tiny one (GENERATED training, the REAL context of central Porto,
tests/transfertraj/registry_fixtures.py), registered in a throwaway store and copied out as a plain
folder. Two fresh venvs are made with uv (from its cache when warm; PyPI otherwise):

- serve: `pip install '.[serve]'` of this checkout, versions constrained by requirements.txt (the
  app developer's install, issue #16);
- model: only the model folder's requirements.txt, installed from the model folder as MLflow's
  virtualenv env manager does: pinned serving packages + the transfertraj wheel in the model's code/.

In each, from a folder outside the checkout (so `import transfertraj` is the installed one), a child
loads the model with `mlflow.pyfunc.load_model` and answers TP for two real Porto trips; the answers
must equal the full environment's. Printed: `du -sh` of both venvs and of the full (base) venv, what
each holds of CUDA (the nvidia-* wheels torch pulls from PyPI on Linux x86_64), and the answers' check.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHILD = """
import json, sys
import mlflow.pyfunc, pandas as pd, transfertraj
model = mlflow.pyfunc.load_model(sys.argv[1])
df = pd.read_json(sys.argv[2], dtype={"trip_id": str})
out = model.predict(df, params={"task": "tp"})
print("ANSWERS " + json.dumps({"transfertraj": transfertraj.__file__, "answers": out.to_dict(orient="list")}))
"""


def du(path: Path) -> str:
    return subprocess.run(["du", "-sh", str(path)], capture_output=True, text=True).stdout.split()[0]


def base_venv() -> Path:
    """The full environment: ./.venv sees the cached base venv through a .pth file (scripts/bootstrap.sh)."""
    for pth in Path(sys.prefix).glob("lib/python3*/site-packages/*.pth"):
        for part in pth.read_text().split("'"):
            if "/venv-" in part and part.endswith("site-packages"):
                return Path(part).parents[2]
    return Path(sys.prefix)


def uv() -> str:
    return shutil.which("uv") or str(Path(sys.executable).parent / "uv")


def make_venv(path: Path, install: list[str], cwd: Path) -> float:
    import time

    t0 = time.perf_counter()
    subprocess.run([uv(), "venv", "-q", "--python", "python3.11", str(path)], check=True)
    subprocess.run(
        [uv(), "pip", "install", "-q", "--python", str(path / "bin" / "python"), *install], check=True, cwd=cwd
    )
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--keep", type=Path, help="folder to keep the store, the model and the venvs in")
    args = p.parse_args(argv)
    import mlflow.artifacts
    import pandas as pd

    from tests.transfertraj.registry_fixtures import features, porto_trips, register, settings_for, train
    from transfertraj import registry

    with tempfile.TemporaryDirectory(prefix="slim-env-") as tmp:
        work = (args.keep or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        settings = settings_for(work / "home")
        feats = features(40)
        register(settings, train(work / "home" / "ckpt", feats), feats)
        registry.configure(settings)
        model_dir = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri="models:/transfertraj-base@champion", dst_path=str(work / "model")
            )
        )
        reqs = (model_dir / "requirements.txt").read_text().split()
        request = porto_trips(2)
        request.to_json(work / "request.json", orient="records")
        here = registry.load("models:/transfertraj-base@champion", settings).predict(request, params={"task": "tp"})

        outside = work / "run"  # not the checkout: the installed transfertraj is imported
        outside.mkdir(exist_ok=True)
        results = {}
        venvs = {
            "serve": ([f"{REPO}[serve]", "-c", str(REPO / "requirements.txt")], REPO),
            "model": (["-r", "requirements.txt"], model_dir),
        }
        for name, (install, cwd) in venvs.items():
            venv = work / f"venv-{name}"
            if venv.exists():
                shutil.rmtree(venv)
            seconds = make_venv(venv, install, cwd)
            done = subprocess.run(
                [str(venv / "bin" / "python"), "-c", CHILD, str(model_dir), str(work / "request.json")],
                capture_output=True,
                text=True,
                cwd=outside,
                env={"PATH": str(venv / "bin"), "HOME": str(Path.home())},
                timeout=600,
            )
            if done.returncode != 0:
                raise RuntimeError(f"{name}: the model did not answer:\n{done.stderr[-3000:]}")
            child = json.loads(done.stdout.split("ANSWERS ", 1)[1])
            there = pd.DataFrame(child["answers"])
            pd.testing.assert_frame_equal(there, here.reset_index(drop=True), check_dtype=False)
            site = next((venv / "lib").glob("python3*/site-packages"))
            results[name] = {
                "size": du(venv),
                "nvidia": du(site / "nvidia") if (site / "nvidia").exists() else "0",
                "torch": du(site / "torch"),
                "install_s": round(seconds, 1),
                "transfertraj_from": child["transfertraj"],
                "pyspark": (site / "pyspark").exists(),
                "answers_equal_full_env": True,
            }
        full_venv = base_venv()
        print(f"model requirements.txt: {' '.join(reqs)}")
        for name, r in results.items():
            print(f"{name}: {r}")
        print(f"full (base venv {full_venv}): {du(full_venv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
