"""The driver JVM's class archive: dumped once, then used; another JDK or jar set gets its own; off by switch."""

import os
import subprocess
from dataclasses import replace

import pytest

from transfertraj.jobs import class_archive as ca
from transfertraj.jobs.spark_session import java_version_text


@pytest.fixture
def settings(settings, tmp_path):
    return replace(settings, cache=tmp_path / "cache")


def test_first_start_dumps_then_the_settled_dump_is_used(settings, monkeypatch):
    monkeypatch.delenv(ca.ENV_VAR, raising=False)
    first = ca.class_archive_options(settings, "a.jar", "jdk 17")
    assert first.startswith("-XX:ArchiveClassesAtExit=") and first.endswith(".dump")
    dump = first.split("=", 1)[1]
    open(dump, "wb").close()  # the JVM has started writing it
    assert ca.class_archive_options(settings, "a.jar", "jdk 17") == ""  # being written: start without
    with open(dump, "wb") as f:
        f.write(b"archive")
    now = os.path.getmtime(dump) + ca.DUMP_SETTLED_S + 1
    used = ca.class_archive_options(settings, "a.jar", "jdk 17", now=now)
    assert used == f"-XX:SharedArchiveFile={ca.archive_path(settings, 'a.jar', 'jdk 17')}"
    assert not os.path.exists(dump)
    second = dump.replace(".dump", "0.dump")  # another first run's, written beside the first
    open(second, "wb").close()
    os.utime(second, (0, 0))
    ca.class_archive_options(settings, "a.jar", "jdk 17")
    assert not os.path.exists(second)
    assert ca.class_archive_options(settings, "b.jar", "jdk 17").startswith("-XX:ArchiveClassesAtExit=")
    assert ca.archive_path(settings, "a.jar", "jdk 21") != ca.archive_path(settings, "a.jar", "jdk 17")


def test_a_dump_killed_before_writing_is_cleared(settings, monkeypatch):
    monkeypatch.delenv(ca.ENV_VAR, raising=False)
    dump = ca.class_archive_options(settings, "c.jar", "jdk").split("=", 1)[1]
    open(dump, "wb").close()
    later = os.path.getmtime(dump) + ca.DUMP_SETTLED_S + 1
    assert ca.class_archive_options(settings, "c.jar", "jdk", now=later).startswith("-XX:ArchiveClassesAtExit=")
    assert not os.path.exists(dump)


def test_switched_off(settings, monkeypatch):
    monkeypatch.setenv(ca.ENV_VAR, "0")
    assert ca.class_archive_options(settings, "a.jar", "jdk") == ""


def test_this_jdk_dumps_and_maps_an_archive(tmp_path):
    """The options work with the JDK Spark starts: a JVM dumps an archive and the next one maps it."""
    java = java_version_text().split("\n", 1)[0]
    archive = tmp_path / "x.jsa"
    subprocess.run([java, f"-XX:ArchiveClassesAtExit={archive}", "-version"], check=True, capture_output=True)
    out = subprocess.run(
        [java, f"-XX:SharedArchiveFile={archive}", "-Xlog:cds", "-version"], check=True, capture_output=True, text=True
    )
    assert "Mapped dynamic region" in out.stdout
