import subprocess
import sys

from transfertraj.cli import main


def test_help_lists_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "transfertraj.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for word in ("cities", "check-config", "spark-jars", "TRANSFERTRAJ_HOME"):
        assert word in out


def test_cities_shows_licences(capsys):
    assert main(["cities"]) == 0
    out = capsys.readouterr().out
    assert "non-commercial" in out and "ODbL" in out and "CC BY 4.0" in out


def test_check_config_fails_on_bad_file(tmp_path, capsys):
    bad = tmp_path / "porto.yaml"
    bad.write_text("name: porto\ntimezone: Nowhere/Void\n")
    assert main(["check-config", "--file", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "timezone" in err and "bbox" in err
