"""A registered model may carry one checkpoint per task (the paper's "full" variant) beside its default:
each task is answered by its own, and the gate scores each task with the checkpoint that answers it.

The checkpoints are tiny models trained on GENERATED features with different seeds (their answers are
not meant to be good, only told apart); the model carries the REAL context of central Porto.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.transfertraj.registry_fixtures import features, porto_context, porto_trips, settings_for, train
from transfertraj import registry

pytestmark = pytest.mark.slow  # four models trained and registered through the gate: the slow tier (CI runs it)

NAME = registry.BASE_MODEL
TASKS = {"tp": ("tp", 8), "tr": ("tr", 4), "od": ("odtte", 8)}  # checkpoint key -> (serving task, mu)


@pytest.fixture(scope="module")
def carried(tmp_path_factory):
    """A version registered through `transfertraj models register --task-checkpoint ...` (all three)."""
    from transfertraj.cli import main

    home = tmp_path_factory.mktemp("task_ckpt_home")
    settings, feats = settings_for(home), features(40)
    default = train(home / "ckpt" / "default", feats, seed=0)
    own = {task: train(home / "ckpt" / task, feats, seed=k + 1) for k, task in enumerate(TASKS)}
    _, ctx = porto_context(settings)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setattr(registry, "training_data", lambda s, cities, version: (feats, 3, {"porto": ctx}))
        argv = ["--home", str(home), "models", "register", "--checkpoint", str(default), "--name", NAME]
        argv += ["--city", "porto", *[a for t, p in own.items() for a in ("--task-checkpoint", f"{t}={p}")]]
        assert main(argv) == 0
    return settings, feats, default, own


def _request() -> pd.DataFrame:
    return porto_trips(4)


def test_each_task_is_answered_by_its_own_checkpoint(carried):
    from transfertraj.model.checkpoint import load_model

    settings, _, default, own = carried
    model = registry.load(f"models:/{NAME}/1", settings)
    served = model.unwrap_python_model()
    assert sorted(served.task_models) == ["od", "tp", "tr"]
    request = _request()
    for key, (task, mu) in TASKS.items():
        answered = model.predict(request, params={"task": task, "mu": mu})
        carried_nets, carried_default = served.task_models, served.torch_model
        try:
            served.task_models, served.torch_model = {}, load_model(own[key])[0]
            by_own = model.predict(request, params={"task": task, "mu": mu})
            served.torch_model = load_model(default)[0]
            by_default = model.predict(request, params={"task": task, "mu": mu})
        finally:
            served.task_models, served.torch_model = carried_nets, carried_default
        pd.testing.assert_frame_equal(answered, by_own)
        num = answered.select_dtypes("number").columns.drop("point", errors="ignore")
        assert not np.allclose(answered[num].to_numpy(), by_default[num].to_numpy())  # the default would differ
    served.task_models.pop("od")
    assert served.model_for("odtte") is served.torch_model  # a task without its own: the default answers


def test_the_gate_scores_each_task_with_the_checkpoint_that_answers_it(carried, monkeypatch):
    settings, feats, default, own = carried
    client = registry.configure(settings)
    run = client.get_run(client.get_model_version(NAME, "1").run_id)
    by_own = {
        "tp_mae_m": registry.validation_metrics(own["tp"], feats, 3)["tp_mae_m"],
        "tr8_mae_m": registry.validation_metrics(own["tr"], feats, 3)["tr8_mae_m"],
        "od_mae_min": registry.validation_metrics(own["od"], feats, 3)["od_mae_min"],
    }
    by_default = registry.validation_metrics(default, feats, 3)
    for metric, value in by_own.items():
        assert run.data.metrics[f"val/{metric}"] == pytest.approx(value)
        assert value != pytest.approx(by_default[metric])  # scoring the default alone would show here
    assert set(json.loads(run.data.tags["task_checkpoints"])) == {"tp", "tr", "od"}

    # The same weights again: the champion (v1) is re-scored as served, so every ratio is exactly 1.
    _, ctx = porto_context(settings)
    monkeypatch.setattr(registry, "training_data", lambda s, cities, version: (feats, 3, {"porto": ctx}))
    again = registry.register_checkpoint(settings, default, NAME, ["porto"], 3, task_checkpoints=own)
    assert again.decision.promoted and again.decision.against == "champion v1"
    assert again.decision.ratios == pytest.approx({"tp": 1.0, "tr8": 1.0, "od": 1.0})
    networks = registry.served_networks(f"models:/{NAME}/{again.version}", settings)
    assert {t: type(n).__name__ for t, n in networks.items()} == dict.fromkeys(("tp", "tr8", "od"), "TransferTraj")


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("xx={ckpt}", "per-task checkpoint key 'xx'"),
        ("tr@={ckpt}", "per-task checkpoint key 'tr@'"),
        ("tp={missing}", "no checkpoint at"),
        ("tp", "give TASK=PATH"),
    ],
)
def test_register_refuses_a_task_checkpoint_it_cannot_serve(carried, tmp_path, capsys, monkeypatch, pair, message):
    from transfertraj.cli import main

    settings, _, default, _ = carried
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    pair = pair.format(ckpt=default, missing=tmp_path / "nowhere.pt")
    argv = ["--home", str(settings.home), "models", "register", "--checkpoint", str(default), "--name", NAME]
    assert main([*argv, "--task-checkpoint", pair]) == 1
    assert message in capsys.readouterr().err


def test_a_city_of_its_own_is_answered_and_gated_by_its_own_checkpoint(carried, monkeypatch):
    """tr@porto answers Porto's TR before tr; tp@lisbon answers nobody here (the model's city is Porto)."""
    settings, feats, default, own = carried
    _, ctx = porto_context(settings)
    monkeypatch.setattr(registry, "training_data", lambda s, cities, version: (feats, 3, {"porto": ctx}))
    keys = {"tr": own["tr"], "tr@porto": own["tp"], "tp@lisbon": own["od"]}
    reg = registry.register_checkpoint(settings, default, NAME, ["porto"], 3, task_checkpoints=keys)
    uri = f"models:/{NAME}/{reg.version}"
    assert set(registry.task_checkpoints_of(uri, settings)) == set(keys)
    model = registry.load(uri, settings)
    served = model.unwrap_python_model()
    assert served.model_for("tr8", "porto") is served.task_models["tr@porto"]
    assert served.model_for("tr8", "lisbon") is served.task_models["tr"]
    assert served.model_for("tp", "porto") is served.torch_model
    assert served.model_for("tp", "lisbon") is served.task_models["tp@lisbon"]
    answered = model.predict(_request(), params={"task": "tr", "mu": 4})
    nets = served.task_models
    try:
        served.task_models = {"tr": nets["tr@porto"]}
        pd.testing.assert_frame_equal(answered, model.predict(_request(), params={"task": "tr", "mu": 4}))
    finally:
        served.task_models = nets
    run = registry.configure(settings).get_run(registry.configure(settings).get_model_version(NAME, reg.version).run_id)
    gated = run.data.metrics["val/tr8_mae_m"]
    assert gated == pytest.approx(registry.validation_metrics(own["tp"], feats, 3)["tr8_mae_m"])
    assert gated != pytest.approx(registry.validation_metrics(own["tr"], feats, 3)["tr8_mae_m"])
