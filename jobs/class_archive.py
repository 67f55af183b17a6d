"""The driver JVM's class archive (JDK application class-data sharing): Spark starts about 3 s sooner.

    options = class_archive_options(settings, jars)   # -> "-XX:SharedArchiveFile=..." or a dump at exit
    TRANSFERTRAJ_SPARK_CLASS_ARCHIVE=0                # off (e.g. to time a start without it)

A Spark session loads some 15,000 classes from the jars of pyspark and Delta; every new process read,
verified and parsed them again: about 7 s of a job's start on 2 cores. The JDK can keep those classes,
parsed, in an archive that later JVMs map instead (`-XX:ArchiveClassesAtExit` writes it when the first JVM
exits, `-XX:SharedArchiveFile` uses it). Measured on this 2-core machine: a session up and one job in
8.9-9.5 s without it, 5.7-6.5 s with it; the first process pays once, about 5 s, while its JVM exits.

The archive belongs to one JDK and one set of jars: its name carries a hash of both, so a new JDK, pyspark
or Delta version dumps a new one. A JVM that cannot map it (another JDK, a changed jar) starts without it,
as it would anyway (-Xshare:auto, the JDK's default). A dump goes to a file of its own (two first runs at
once do not write one file) and becomes the archive at the next start, once nothing has written to it for
DUMP_SETTLED_S (the JVM writes it as it exits, after the Python process that started it may be gone).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

from transfertraj.core.settings import Settings

log = logging.getLogger(__name__)

ENV_VAR = "TRANSFERTRAJ_SPARK_CLASS_ARCHIVE"
DUMP_SETTLED_S = 30.0


def archive_path(settings: Settings, jars: str, java: str) -> Path:
    """<cache>/jvm/spark-<hash of the JDK, pyspark and the jars>.jsa"""
    import pyspark

    key = "\n".join([java, pyspark.__version__, os.path.dirname(pyspark.__file__), jars])
    return settings.cache / "jvm" / f"spark-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsa"


def _settled_dump(archive: Path, now: float) -> Path | None:
    """A finished dump of an earlier first run: not written to for DUMP_SETTLED_S, and not empty."""
    for dump in sorted(archive.parent.glob(archive.name + ".*.dump")):
        info = dump.stat()
        if now - info.st_mtime > DUMP_SETTLED_S:
            if info.st_size > 0:
                return dump
            dump.unlink(missing_ok=True)  # a JVM killed before it wrote anything
    return None


def class_archive_options(settings: Settings, jars: str, java: str, now: float | None = None) -> str:
    """JVM options for the driver: use the archive, or (none yet) dump one when this JVM exits. Empty when
    switched off (ENV_VAR=0)."""
    if os.environ.get(ENV_VAR, "1") == "0":
        return ""
    archive = archive_path(settings, jars, java)
    if not archive.exists():
        archive.parent.mkdir(parents=True, exist_ok=True)
        dump = _settled_dump(archive, time.time() if now is None else now)
        if dump is not None:
            os.replace(dump, archive)
            log.info("JVM class archive ready: %s", archive)
    if archive.exists():
        for extra in archive.parent.glob(archive.name + ".*.dump"):  # a second first run's, not needed
            if time.time() - extra.stat().st_mtime > DUMP_SETTLED_S:
                extra.unlink(missing_ok=True)
        return f"-XX:SharedArchiveFile={archive}"
    if any(archive.parent.glob(archive.name + ".*.dump")):
        return ""  # another first run is writing one: start without, as before
    log.info("no JVM class archive yet: this JVM writes one as it exits (once, about 5 s)")
    return f"-XX:ArchiveClassesAtExit={archive}.{os.getpid()}.dump"
