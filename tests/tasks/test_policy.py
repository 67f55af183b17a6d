"""DAG policy: the failure alert (log line, webhook) and where training tasks run."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

from transfertraj.tasks.policy import DEFAULT_ARGS, failure_alert, retry_log, train_pool, train_queue


def test_failure_alert_logs_and_posts_to_a_webhook(caplog, monkeypatch):
    got = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.handle_request, daemon=True).start()
    monkeypatch.setenv("TRANSFERTRAJ_ALERT_WEBHOOK", f"http://127.0.0.1:{server.server_port}/hook")
    ti = SimpleNamespace(dag_id="nightly_ingest_porto", task_id="ingest", run_id="r1")
    with caplog.at_level("ERROR", logger="transfertraj.pipeline"):
        failure_alert({"ti": ti, "exception": ValueError("quality gate: 40 % rejected")})
    server.server_close()
    assert "ALERT transfertraj task failed: nightly_ingest_porto.ingest run r1" in caplog.text
    assert got and "nightly_ingest_porto.ingest failed" in got[0]["text"]


def test_a_webhook_that_is_down_is_logged_not_raised(caplog, monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_port
    server.server_close()  # nothing listens there now
    monkeypatch.setenv("TRANSFERTRAJ_ALERT_WEBHOOK", f"http://127.0.0.1:{port}/hook")
    with caplog.at_level("ERROR", logger="transfertraj.pipeline"):
        failure_alert({"ti": None, "run_id": "r2", "exception": "boom"})
    assert "ALERT transfertraj task failed: ?.? run r2: boom" in caplog.text
    assert "alert webhook failed" in caplog.text


def test_every_task_retries_and_alerts_by_default():
    assert DEFAULT_ARGS["retries"] == 2 and DEFAULT_ARGS["on_failure_callback"] is failure_alert
    assert DEFAULT_ARGS["on_retry_callback"] is retry_log


def test_a_retried_try_logs_its_error_and_posts_nothing(caplog, monkeypatch):
    monkeypatch.setenv("TRANSFERTRAJ_ALERT_WEBHOOK", "http://127.0.0.1:9/nobody-listens")  # a POST would log a failure
    ti = SimpleNamespace(dag_id="onboard_city", task_id="ingest", run_id="r3")
    with caplog.at_level("WARNING", logger="transfertraj.pipeline"):
        retry_log({"ti": ti, "exception": RuntimeError("Cannot call methods on a stopped SparkContext")})
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "task will retry: onboard_city.ingest run r3: Cannot call methods" in caplog.text


def test_training_pool_and_queue_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("TRANSFERTRAJ_TRAIN_POOL", raising=False)
    monkeypatch.delenv("TRANSFERTRAJ_TRAIN_QUEUE", raising=False)
    assert (train_pool(), train_queue()) == ("default_pool", "default")
    monkeypatch.setenv("TRANSFERTRAJ_TRAIN_POOL", "gpu")
    monkeypatch.setenv("TRANSFERTRAJ_TRAIN_QUEUE", "gpu")
    assert (train_pool(), train_queue()) == ("gpu", "gpu")
