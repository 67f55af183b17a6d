"""bench/ingest.py's own arithmetic: the profile's job spans and the dated history rows (no Spark)."""

import csv
import json

from bench.ingest import _covered_s, append_history, summarise_event_log


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
