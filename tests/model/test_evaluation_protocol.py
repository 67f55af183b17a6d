"""What the suite measures: named suites, the rows a task is scored on, refused overrides."""

from __future__ import annotations

import pytest

from transfertraj.core.constants import MODEL_SIZES
from transfertraj.model.evaluation_protocol import SUITES, TASKS, suite_config, task_rows
from transfertraj.model.transfertraj import ModelArgs


def test_suites_use_the_named_model_sizes():
    assert SUITES["quick"].model == MODEL_SIZES["tiny"]  # the size behind docs/evaluation.md's figures
    assert SUITES["full"].model == MODEL_SIZES["paper"] == {}
    ModelArgs(**MODEL_SIZES["tiny"])  # a valid model
    SUITES["quick"].model["d_model"] = -1  # a suite's dict is its own copy, never the shared size
    assert MODEL_SIZES["tiny"]["d_model"] == 32
    SUITES["quick"].model["d_model"] = 32


def test_suite_config_overrides_and_refuses_unknown_names():
    c = suite_config("full", seeds=(0,), transfers=("west-east",))
    assert c.seeds == (0,) and c.transfers == ("west-east",) and c.tasks == TASKS
    with pytest.raises(ValueError, match="unknown transfers/ablations"):
        suite_config("full", transfers=("porto-mars",))


def test_tp_is_scored_on_test_trajectories_with_enough_points(two_cities):
    config = SUITES["quick"]
    rows = task_rows(two_cities, "test", "tp", config)
    assert len(rows) and (two_cities.n_points[rows] >= config.tp_min_points).all()
    assert len(task_rows(two_cities, "test", "tr8", config)) >= len(rows)
