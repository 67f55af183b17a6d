"""bench/ingest.py's own arithmetic: the profile's job spans and the dated history rows (no Spark)."""

import csv
import json

from bench.ingest import _covered_s, _linked_home, append_history, before_tree, jfr_samples, summarise_event_log


def test_overlapping_jobs_are_counted_once():
    jobs = [{"start": 0, "end": 4000}, {"start": 1000, "end": 3000}, {"start": 5000, "end": 6000}]
    assert _covered_s(jobs) == 5.0
    assert _covered_s([]) == 0


def _event_log(folder, jobs):
    """A minimal Spark event log: job start and end, one completed stage and one task each."""
    folder.mkdir(parents=True)
    events = []
    for job_id, (start, end, phase) in enumerate(jobs):
        props = {"spark.job.description": phase} if phase else {}
        events += [
            {
                "Event": "SparkListenerJobStart",
                "Job ID": job_id,
                "Submission Time": start,
                "Stage IDs": [job_id],
                "Properties": props,
            },
            {"Event": "SparkListenerStageCompleted", "Stage Info": {"Stage ID": job_id, "Number of Tasks": 2}},
            {"Event": "SparkListenerTaskEnd", "Stage ID": job_id, "Task Metrics": {"Executor CPU Time": 5e8}},
            {"Event": "SparkListenerJobEnd", "Job ID": job_id, "Completion Time": end},
        ]
    (folder / "events_1_local-1").write_text("\n".join(json.dumps(e) for e in events) + "\n")


def test_the_profile_sums_jobs_stages_and_tasks_by_step(tmp_path):
    _event_log(
        tmp_path / "tiny" / "eventlog_v2_local-1",
        [(0, 2000, "ingest: runs"), (1000, 3000, "ingest: runs"), (4000, 4500, None)],
    )
    lines = summarise_event_log(tmp_path)
    assert lines[0].startswith("tiny: 3.5 s    3 job(s)   3 stage(s)    6 task(s)    1.5 task CPU s")
    runs = next(line for line in lines if line.endswith("ingest: runs"))
    assert "3.0 s    2 job(s)   2 stage(s)    4 task(s)    1.0 task CPU s" in runs


def test_each_run_appends_dated_rows_and_keeps_earlier_columns(tmp_path):
    path = tmp_path / "ingest.csv"
    append_history(path, "20260101T000000Z", (1, 2, 3), (4, 5, 6), [{"engine": "spark", "seconds": 9}], "first")
    append_history(path, "20260102T000000Z", (1, 1, 1), (1, 1, 1), [{"engine": "spark", "spark_jobs": 26}], "")
    rows = list(csv.DictReader(path.open()))
    assert [r["date"] for r in rows] == ["20260101T000000Z", "20260102T000000Z"]
    assert rows[0]["seconds"] == "9" and rows[0]["spark_jobs"] == ""
    assert rows[1]["spark_jobs"] == "26" and rows[0]["load_start"] == "1.0 / 2.0 / 3.0"


JFR_TEXT = """jdk.ExecutionSample {
  startTime = 15:30:58.498
  sampledThread = "Executor task launch worker for task 3.0 in stage 25.0 (TID 230)" (javaThreadId = 88)
  state = "STATE_RUNNABLE"
  stackTrace = [
    shaded.parquet.it.unimi.dsi.fastutil.doubles.Double2IntLinkedOpenHashMap.get(double) line: 402
    org.apache.parquet.column.values.dictionary.DictionaryValuesWriter$PlainDoubleDictionaryValuesWriter.writeDouble(double) line: 320
    org.apache.spark.sql.delta.files.DeltaFileFormatWriter$.executeTask(...) line: 1
  ]
}

jdk.ExecutionSample {
  startTime = 15:30:58.518
  sampledThread = "main" (javaThreadId = 1)
  state = "STATE_RUNNABLE"
  stackTrace = [
    sun.security.provider.SHA2.implCompress0(byte[], int) line: 225
    org.apache.spark.unsafe.types.UTF8String.getBytes() line: 1
    ...
  ]
}

jdk.ExecutionSample {
  startTime = 15:30:58.538
  sampledThread = "main" (javaThreadId = 1)
  state = "STATE_RUNNABLE"
  stackTrace = [
    java.lang.Object.hashCode() line: 1
  ]
}
"""


def test_jvm_samples_count_for_the_first_component_from_the_top_of_the_stack():
    by_component, by_frame = jfr_samples(JFR_TEXT)
    assert by_component == {
        "Parquet writer (Delta tables)": 1,  # not Delta: the Parquet frame is nearer the top
        "SHA-256 (line and trip hashes)": 1,
        "other (JDK, Scala, Spark core)": 1,
    }
    assert by_frame["sun.security.provider.SHA2.implCompress0(byte[], int)"] == 1


def test_the_before_tree_is_laid_out_as_the_installed_package_imports_it(tmp_path):
    tree = before_tree("HEAD", tmp_path)
    assert tree.name.startswith("spark@")
    for part in ("jobs/ingest.py", "model/masking.py", "feature_store/delta_io.py", "cities/porto.yaml"):
        assert (tree / "transfertraj" / part).is_file(), part
    assert (tree / "bench" / "ingest.py").is_file()
    landing = tmp_path / "home" / "landing" / "porto" / "2013-07-01"
    landing.mkdir(parents=True)
    (landing / "a.csv").write_text("x\n")
    home = _linked_home(tmp_path, tree.name, landing)
    linked = home / "landing" / "porto" / "2013-07-01" / "a.csv"
    assert linked.read_text() == "x\n" and linked.stat().st_ino == (landing / "a.csv").stat().st_ino
