"""Real servers on localhost for the integration tests: PostgreSQL, a Spark standalone cluster, MLflow.

Each server is a child process started from the pinned environment (Spark from the pyspark wheel,
`mlflow server` from the venv) or from the Debian PostgreSQL packages, on free ports, with its log and
pid file under one run folder; `stop()` ends exactly the processes it started. scripts/integration.sh
installs PostgreSQL when it is missing and, should pytest itself be killed, stops whatever pid files
are left.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, what: str, timeout: float, log: Path | None = None):
    """Poll `check()` until it returns something truthy; fail with the log's tail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (OSError, ValueError):
            pass
        time.sleep(1)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s\n{tail}")


def get_json(url: str, timeout: float = 5):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


@dataclass
class Process:
    """One started server: its Popen, log and pid file. `stop()` signals its whole process group."""

    name: str
    popen: subprocess.Popen
    log: Path
    pid_file: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 20) -> None:
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self.pid_file.unlink(missing_ok=True)


@dataclass
class RunFolder:
    """Logs, pid files and server state of one integration run."""

    root: Path
    processes: list[Process] = field(default_factory=list)

    def __post_init__(self):
        for sub in ("logs", "pids"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> Process:
        log = self.root / "logs" / f"{name}.log"
        with open(log, "ab") as out:
            # Own process group: stop() reaches the JVM or uvicorn children a launcher script forks.
            popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd or self.root, start_new_session=True
            )
        pid_file = self.root / "pids" / f"{name}.pid"
        pid_file.write_text(str(popen.pid))
        proc = Process(name, popen, log, pid_file)
        self.processes.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()


# ------------------------------------------------------------------------------------------ PostgreSQL


def postgres_bindir() -> Path | None:
    """The Debian packages' server binaries (/usr/lib/postgresql/<major>/bin), newest major first."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]), reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class Postgres:
    """A throwaway cluster (initdb) on a free port; trust auth on 127.0.0.1 only."""

    bindir: Path
    folder: Path
    port: int
    user: str = "transfertraj"

    def _as_owner(self, argv: list[str]) -> list[str]:
        # PostgreSQL refuses to run as root: run it as the Debian packages' `postgres` account then.
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    @classmethod
    def start(cls, bindir: Path, folder: Path) -> Postgres:
        folder.mkdir(parents=True, exist_ok=True)
        pg = cls(bindir, folder, free_port())
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres")
        data = folder / "data"
        subprocess.run(
            pg._as_owner(
                [str(bindir / "initdb"), "-D", str(data), "-U", pg.user, "--auth=trust", "-E", "UTF8", "--no-sync"]
            ),
            check=True,
            capture_output=True,
        )
        subprocess.run(
            pg._as_owner(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(folder / "postgres.log"),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    f"-p {pg.port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        return pg

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()

    def query(self, database: str, sql: str) -> list[tuple]:
        import psycopg2

        with psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname=database) as conn:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()

    def stop(self) -> None:
        subprocess.run(
            self._as_owner([str(self.bindir / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop"]),
            check=False,
            capture_output=True,
        )


# ------------------------------------------------------------------------------------- Spark standalone


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


@dataclass
class SparkCluster:
    master_url: str
    master_ui: str
    worker_ui: str

    @classmethod
    def start(cls, run: RunFolder, env: dict[str, str], *, cores: int, memory: str) -> SparkCluster:
        """`spark-class` Master and Worker from the pyspark wheel (it ships no sbin/start-*.sh)."""
        port, ui, worker_ui = free_port(), free_port(), free_port()
        env = {
            **env,
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_LOG_DIR": str(run.root / "logs"),
            "SPARK_WORKER_DIR": str(run.root / "spark-work"),
        }
        spark_class = str(VENV_BIN / "spark-class")
        master = run.start(
            "spark-master",
            [
                spark_class,
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webui-port",
                str(ui),
            ],
            env,
        )
        cluster = cls(f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui}", f"http://127.0.0.1:{worker_ui}")
        wait_until(lambda: get_json(f"{cluster.master_ui}/json/")["status"] == "ALIVE", "Spark master", 90, master.log)
        worker = run.start(
            "spark-worker",
            [
                spark_class,
                "org.apache.spark.deploy.worker.Worker",
                "--host",
                "127.0.0.1",
                "--cores",
                str(cores),
                "--memory",
                memory,
                "--webui-port",
                str(worker_ui),
                cluster.master_url,
            ],
            env,
        )
        wait_until(lambda: get_json(f"{cluster.master_ui}/json/")["aliveworkers"] >= 1, "Spark worker", 90, worker.log)
        return cluster

    def state(self) -> dict:
        return get_json(f"{self.master_ui}/json/")


# ----------------------------------------------------------------------------------------------- MLflow


@dataclass
class MlflowServer:
    url: str

    @classmethod
    def start(cls, run: RunFolder, env: dict[str, str], *, backend_uri: str, artifacts: Path) -> MlflowServer:
        port = free_port()
        proc = run.start(
            "mlflow-server",
            [
                str(VENV_BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                backend_uri,
                "--artifacts-destination",
                str(artifacts),
                "--serve-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            env,
        )
        server = cls(f"http://127.0.0.1:{port}")
        wait_until(
            lambda: urllib.request.urlopen(f"{server.url}/health", timeout=5).status == 200,
            "mlflow server",
            180,
            proc.log,
        )
        return server


# ----------------------------------------------------------------------------------------------- Airflow


@dataclass
class AirflowServers:
    """Airflow 3 as deployed: api-server (UI, REST and the execution API the task runners call),
    scheduler (LocalExecutor here, Celery in docker-compose.yml) and dag-processor, on one metadata DB."""

    api_url: str
    env: dict[str, str]

    @classmethod
    def start(cls, run: RunFolder, env: dict[str, str]) -> AirflowServers:
        port = free_port()
        env = {
            **env,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            # One secret for every component: the scheduler signs the task runners' tokens, the api-server checks them.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(24),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(24),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
        }
        airflow = str(VENV_BIN / "airflow")
        api = run.start(
            "airflow-api-server",
            [airflow, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env,
        )
        run.start("airflow-scheduler", [airflow, "scheduler"], env)
        run.start("airflow-dag-processor", [airflow, "dag-processor"], env)
        servers = cls(f"http://127.0.0.1:{port}", env)
        wait_until(
            lambda: get_json(f"{servers.api_url}/api/v2/monitor/health")["scheduler"]["status"] == "healthy",
            "Airflow api-server and scheduler",
            300,
            api.log,
        )
        return servers
