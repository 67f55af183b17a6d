"""DAG policy, the same for every DAG: retries, the failure alert, where training tasks run.

    from transfertraj.tasks.policy import DEFAULT_ARGS, train_pool, train_queue
    @dag(..., default_args=DEFAULT_ARGS)
    @task(pool=train_pool(), queue=train_queue(), retries=1)

The alert logs one `ALERT transfertraj task failed: <dag>.<task> run <id>: <error>` line and, when
TRANSFERTRAJ_ALERT_WEBHOOK is set, POSTs `{"text": ...}` there (the body Slack, Mattermost and Teams
incoming webhooks accept). A try that fails with retries left logs one `transfertraj task will retry: ...`
warning instead, with its error, so the cause of a retried failure is in the log even when the retry
succeeds. Retries wait TRANSFERTRAJ_RETRY_DELAY_S seconds (default 300). It is an Airflow notifier, so
e-mail or another provider's notifier can be added beside it in DEFAULT_ARGS (docs/operations.md). Everything here runs while the scheduler parses
the DAG files: it reads the environment and imports nothing beyond the Airflow SDK they import anyway.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import timedelta

from airflow.sdk import BaseNotifier

log = logging.getLogger("transfertraj.pipeline")


class FailureAlert(BaseNotifier):
    """on_failure_callback: log one line per failed task, and POST it to TRANSFERTRAJ_ALERT_WEBHOOK if set.

    With retrying=True it is the on_retry_callback: the failed try's error as one warning line, no POST."""

    def __init__(self, retrying: bool = False):
        super().__init__()
        self.retrying = retrying  # a try with retries left: a warning in the log, nobody paged

    def notify(self, context) -> None:
        ti = context.get("ti") or context.get("task_instance")
        dag_id = getattr(ti, "dag_id", "?")
        task_id = getattr(ti, "task_id", "?")
        run_id = context.get("run_id") or getattr(ti, "run_id", "?")
        error = context.get("exception")
        if self.retrying:
            log.warning("transfertraj task will retry: %s.%s run %s: %s", dag_id, task_id, run_id, error)
            return
        log.error("ALERT transfertraj task failed: %s.%s run %s: %s", dag_id, task_id, run_id, error)
        webhook = os.environ.get("TRANSFERTRAJ_ALERT_WEBHOOK")  # read per alert: set it without a DAG reparse
        if webhook:
            _post(webhook, f"transfertraj: {dag_id}.{task_id} failed (run {run_id}): {error}")


def _post(url: str, text: str) -> None:
    """POST {"text": text}; a webhook that is down is logged, never raised (the task failed already)."""
    import urllib.request

    req = urllib.request.Request(
        url, data=json.dumps({"text": text}).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        urllib.request.urlopen(req, timeout=10).close()
    except OSError as err:
        log.error("alert webhook failed: %s", err)


failure_alert = FailureAlert()
retry_log = FailureAlert(retrying=True)

DEFAULT_ARGS = {
    "retries": 2,
    # Read when the DAG files are parsed. The DAG tests set it to 1 s, so a retried try costs no wait there.
    "retry_delay": timedelta(seconds=float(os.environ.get("TRANSFERTRAJ_RETRY_DELAY_S", "300"))),
    "on_failure_callback": failure_alert,
    "on_retry_callback": retry_log,
}


def train_pool() -> str:
    """The Airflow pool of training tasks: `gpu` when the operator made one and named it here."""
    return os.environ.get("TRANSFERTRAJ_TRAIN_POOL", "default_pool")


def train_queue() -> str:
    """The Celery queue of training tasks (a GPU worker listens on it); `default` otherwise."""
    return os.environ.get("TRANSFERTRAJ_TRAIN_QUEUE", "default")
