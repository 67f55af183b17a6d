"""The model subcommands: argument parsing, and reading the features table at a given Delta version."""

from __future__ import annotations

import pytest

from transfertraj.core.constants import MODEL_SIZES
from transfertraj.model.commands import parse_model_arg, register
from transfertraj.model.evaluation_protocol import SUITES


def test_evaluate_subcommand_is_registered():
    import argparse

    from transfertraj.cli import build_parser

    args = build_parser().parse_args(
        ["evaluate", "--suite", "full", "--seeds", "0", "1", "--transfers", "west-east", "--no-mlflow"]
    )
    assert args.suite == "full" and args.seeds == [0, 1] and args.transfers == ["west-east"]
    sub = argparse.ArgumentParser().add_subparsers()
    register(sub)
    assert SUITES["quick"].model == MODEL_SIZES["tiny"] and MODEL_SIZES["tiny"]["d_model"] < 128


def test_model_arg_is_typed_by_the_model_field_and_refuses_unknown_names():
    assert parse_model_arg("aux_loss_weight=0.1") == {"aux_loss_weight": 0.1}
    assert parse_model_arg("n_experts=8") == {"n_experts": 8}
    assert parse_model_arg("use_moe=false") == {"use_moe": False}
    for bad in ("aux_loss_weight", "no_such_field=1", "n_experts=eight", "use_moe=maybe", "poi_dim=3"):
        with pytest.raises(SystemExit, match="--model-arg"):
            parse_model_arg(bad)


def test_pretrain_at_an_older_version_reads_that_versions_rows(tmp_path):
    """A features table with two versions: --version 0 trains on version 0's rows and records version 0."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from tests.model.generated import generated_features
    from transfertraj.cli import main
    from transfertraj.model.checkpoint import load_checkpoint

    path = tmp_path / "features"
    v0 = generated_features(24, seed=0)
    v1 = generated_features(36, seed=1)
    v1["trip_id"] = "v1-" + v1["trip_id"]
    for df in (v0, v1):  # version 0, then version 1 replaces it
        write_deltalake(
            path, pa.Table.from_pandas(df, preserve_index=False), mode="overwrite", partition_by=["city", "date"]
        )
    common = ["--home", str(tmp_path), "pretrain", "--features", str(path), "--epochs", "1", "--no-progress"]
    common += ["--city", "generated_city"]
    assert main([*common, "--version", "0", "--out", str(tmp_path / "old")]) == 0
    old = load_checkpoint(tmp_path / "old" / "best.pt")["data"]
    assert old["data_version"] == 0 and old["n_trajectories"] == 24
    assert main([*common, "--out", str(tmp_path / "new")]) == 0
    new = load_checkpoint(tmp_path / "new" / "best.pt")["data"]
    assert new["data_version"] == 1 and new["n_trajectories"] == 36
    with pytest.raises(ValueError, match="no version 5"):
        main([*common, "--version", "5", "--out", str(tmp_path / "none")])


def test_evaluate_runs_the_in_domain_protocol_on_the_city_it_is_given():
    from transfertraj.cli import build_parser
    from transfertraj.model.commands import suite_from_args

    args = build_parser().parse_args(["evaluate", "--suite", "full", "--tiny", "--source-city", "sanfrancisco"])
    assert suite_from_args(args).source_city == "sanfrancisco"
    assert suite_from_args(build_parser().parse_args(["evaluate"])).source_city == "porto"
