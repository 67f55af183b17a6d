"""The gate's rule, per task: each task's error ratio against the reference within that task's tolerance,
every ratio named in the decision, tolerances configured in one place."""

from __future__ import annotations

import math
import os

import pytest

from transfertraj.gate import GATE_TOLERANCES, TOLERANCE_ENV, ValidationSet, compare, tolerances

CHAMP = {"tp_mae_m": 100.0, "tr8_mae_m": 50.0, "od_mae_min": 2.0}


def test_a_model_as_good_on_tp_and_tr_but_worse_on_od_is_stopped_by_od_alone():
    # the 1-epoch incident: TP and TR matched, OD 41 % worse
    d = compare({"tp_mae_m": 100.0, "tr8_mae_m": 50.0, "od_mae_min": 2.82}, CHAMP, tolerances(""))
    assert not d.promoted
    assert d.reason.startswith("worse than the champion on od:")
    assert "tp x1.000 <= x1.02 ok" in d.reason and "tr8 x1.000 <= x1.02 ok" in d.reason
    assert "od x1.410 > x1.02 WORSE" in d.reason
    assert d.ratios == pytest.approx({"tp": 1.0, "tr8": 1.0, "od": 1.41})


def test_each_task_has_its_own_tolerance():
    tol = {"tp": 0.02, "tr8": 0.02, "od": 0.10}
    assert compare({**CHAMP, "od_mae_min": 2.18}, CHAMP, tol).promoted  # 9 % worse on od: within od's 10 %
    d = compare({**CHAMP, "od_mae_min": 2.18, "tp_mae_m": 103.0}, CHAMP, tol)  # 3 % on tp: beyond tp's 2 %
    assert not d.promoted and d.reason.startswith("worse than the champion on tp:")
    assert "od x1.090 <= x1.1 ok" in d.reason
    both = compare({"tp_mae_m": 110.0, "tr8_mae_m": 49.0, "od_mae_min": 3.0}, CHAMP, tol)
    assert both.reason.startswith("worse than the champion on tp, od:")


def test_the_boundary_and_the_tasks_not_scored():
    assert compare({**CHAMP, "tp_mae_m": 101.9}, CHAMP, 0.02).promoted
    assert not compare({**CHAMP, "tp_mae_m": 102.1}, CHAMP, 0.02).promoted
    lost = compare({**CHAMP, "od_mae_min": math.nan}, CHAMP, 0.02)  # a task the challenger cannot answer
    assert not lost.promoted and "od missing" in lost.reason
    neither = compare({**CHAMP, "od_mae_min": math.nan}, {**CHAMP, "od_mae_min": math.nan}, 0.0)
    assert neither.promoted and "od not scored" in neither.reason
    first = compare(CHAMP, None, 0.02)
    assert first.promoted and first.reason == "no champion yet"


def test_the_lines_show_every_ratio_and_tolerance():
    d = compare({**CHAMP, "od_mae_min": 3.0}, CHAMP, 0.02, against="zero-shot transfertraj-base/1")
    text = "\n".join(d.lines())
    assert text.startswith("gate: KEPT zero-shot transfertraj-base/1 (worse than the zero-shot")
    assert "x1.500 (tolerance x1.02)" in text and "x1.000 (tolerance x1.02)" in text


def test_tolerances_come_from_one_place(monkeypatch):
    monkeypatch.delenv(TOLERANCE_ENV, raising=False)
    assert tolerances() == GATE_TOLERANCES
    monkeypatch.setenv(TOLERANCE_ENV, "0.05")
    assert tolerances() == {"tp": 0.05, "tr8": 0.05, "od": 0.05}
    monkeypatch.setenv(TOLERANCE_ENV, " od=0.1, tp=0 ")
    assert tolerances() == {**GATE_TOLERANCES, "od": 0.1, "tp": 0.0}
    with pytest.raises(ValueError, match="unknown task 'tte'"):
        tolerances("tte=0.1")
    with pytest.raises(ValueError, match="negative"):
        tolerances("-0.1")
    with pytest.raises(ValueError, match="not a number"):
        tolerances("od=lots")


def test_the_validation_set_names_its_version_and_split():
    tags = ValidationSet(None, 12, ("porto",)).tags()
    assert tags["gate.validation_version"] == "12" and tags["gate.validation_cities"] == "porto"
    assert tags["gate.validation_table"] == "features" and "chronological" in tags["gate.validation_split"]


def test_a_runs_tolerance_does_not_outlive_the_run(monkeypatch):
    """The pretrain DAG's `tolerance` param holds for its own gate only: tasks share a process (dag.test)."""
    import pytest

    from transfertraj.gate import TOLERANCE_ENV, tolerance_override, tolerances

    monkeypatch.delenv(TOLERANCE_ENV, raising=False)
    with tolerance_override(0.0):
        assert tolerances() == {"tp": 0.0, "tr8": 0.0, "od": 0.0}
    assert TOLERANCE_ENV not in os.environ and tolerances()["od"] == 0.02
    monkeypatch.setenv(TOLERANCE_ENV, "od=0.05")
    with tolerance_override("tp=0.1"):
        assert tolerances()["tp"] == 0.1
    assert os.environ[TOLERANCE_ENV] == "od=0.05"
    with pytest.raises(ValueError, match="not a number"), tolerance_override("lots"):
        pass
