"""What the training tasks share: checkpoint folders per run, overrides, the XCom of a registration."""

import math
from types import SimpleNamespace

from transfertraj.core.settings import Settings
from transfertraj.tasks.training_run import checkpoint_dir, finite, registered, train_overrides


def test_a_run_id_becomes_one_safe_folder(tmp_path):
    settings = Settings.load(home=tmp_path)
    out = checkpoint_dir(settings, "transfertraj-base", "manual__2024-01-01T00:00:00+00:00")
    assert out == tmp_path / "checkpoints" / "transfertraj-base" / "manual__2024-01-01T00_00_00_00_00"


def test_unset_overrides_leave_the_defaults():
    assert train_overrides({"epochs": 3, "lr": None}) == {"epochs": 3}


def test_the_xcom_has_no_nan():
    reg = SimpleNamespace(
        name="transfertraj-base",
        version=2,
        run_id="r",
        decision=SimpleNamespace(promoted=True, reason="no metric worse"),
        metrics={"val/tp_mae_m": 12.5, "val/od_mae_min": math.nan},
        champion="2",
    )
    assert registered(reg) == {
        "name": "transfertraj-base",
        "version": 2,
        "run_id": "r",
        "promoted": True,
        "reason": "no metric worse",
        "champion": "2",
        "metrics": {"val/tp_mae_m": 12.5, "val/od_mae_min": None},
    }
    assert finite({"a": 1, "b": "x"}) == {"a": 1, "b": "x"}
