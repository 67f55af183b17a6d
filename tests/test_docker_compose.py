"""docker-compose.yml against the Compose Specification's JSON schema, plus the stack's own policy.

The schema is vendored (tests/data/compose-spec.json, source and licence in compose-spec.NOTICE.md), so
this runs with no network and no Docker engine. The file is checked the way Compose reads it: YAML
anchors and merge keys resolved, `${...}` interpolated from .env.example, then validated.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
SCHEMA_FILE = REPO / "tests" / "data" / "compose-spec.json"
SCHEMA_SHA256 = "46b7d35f19dd93a05f8fea530291bf84d881c1791ec167ecf0e6fb94e639d496"

AIRFLOW_COMPONENTS = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|_KEY$|AUTH$")
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}; `$$` is a literal `$`.
VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class MissingVariable(KeyError):
    """A `${NAME:?...}` variable with no value: Compose refuses to start."""


def interpolate(value, env: dict[str, str]):
    """Compose's variable substitution over a loaded document (strings only; keys are left alone)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, arg = match.group(2), match.group(3)
        current = env.get(name)
        unset_or_empty = current is None or (current == "" and op is not None and op.startswith(":"))
        if op in (":?", "?") and unset_or_empty:
            raise MissingVariable(f"{name}: {arg}")
        if op in (":-", "-") and unset_or_empty:
            return arg
        return current or ""

    return VARIABLE.sub(substitute, value)


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose(raw) -> dict:
    return interpolate(raw, read_env_file(ENV_EXAMPLE))


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text())


def test_vendored_schema_is_the_noted_upstream_copy(schema):
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert schema["$id"] == "compose_spec.json" and schema["title"] == "Compose Specification"


def validator(schema):
    # The schema says draft-07 in a spelling ("https://json-schema.org/draft-07/schema", no '#') that
    # jsonschema's lookup does not recognise; name the draft rather than fall back to the latest.
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_compose_file_is_valid_against_the_compose_specification(compose, schema):
    errors = sorted(validator(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_the_schema_rejects_what_compose_rejects(compose, schema):
    """The validation has teeth: a misspelt key and a wrong condition both fail it."""
    check = validator(schema)
    misspelt = json.loads(json.dumps(compose))
    misspelt["services"]["postgres"]["healthcheks"] = misspelt["services"]["postgres"].pop("healthcheck")
    assert any("healthcheks" in e.message for e in check.iter_errors(misspelt))
    bad_condition = json.loads(json.dumps(compose))
    bad_condition["services"]["mlflow"]["depends_on"]["postgres"]["condition"] = "service_ready"
    assert list(check.iter_errors(bad_condition))


def test_the_stack_has_every_component_the_issue_names(compose):
    services = compose["services"]
    assert {
        "postgres",
        "redis",
        "spark-master",
        "spark-worker",
        "mlflow",
        "airflow-init",
        "airflow-worker",
        "airflow-worker-gpu",
    } | AIRFLOW_COMPONENTS <= set(services)
    assert "CeleryExecutor" == services["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"]
    for name in AIRFLOW_COMPONENTS | {"airflow-worker", "airflow-worker-gpu"}:
        assert services[name]["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql")


def test_every_long_running_service_has_a_healthcheck_or_says_why_not(compose):
    for name, service in compose["services"].items():
        if "healthcheck" in service:
            assert service["healthcheck"]["test"], name
        else:
            assert service.get("x-healthcheck-reason"), f"{name}: no healthcheck and no x-healthcheck-reason"
            assert service.get("restart") == "no", f"{name}: only one-shot services may go without a healthcheck"


def test_dependencies_wait_for_health_or_completion(compose):
    services = compose["services"]
    for name, service in services.items():
        for dep, spec in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            expected = "service_healthy" if "healthcheck" in services[dep] else "service_completed_successfully"
            assert spec["condition"] == expected, f"{name} -> {dep}"
    for name in AIRFLOW_COMPONENTS | {"airflow-worker", "airflow-worker-gpu", "mlflow"}:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_gpu_worker_reserves_nvidia_devices_and_serves_only_the_gpu_queue(compose):
    gpu = compose["services"]["airflow-worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    command = gpu["command"]
    assert command[command.index("--queues") + 1] == "gpu"
    cpu = compose["services"]["airflow-worker"]["command"]
    assert "gpu" not in cpu[cpu.index("--queues") + 1].split(",")
    assert "deploy" not in compose["services"]["airflow-worker"]


def test_drivers_and_executors_share_the_data_root(compose):
    """A Delta path written by an executor must be the same file for the driver that commits it."""
    services = compose["services"]
    for name in ("spark-worker", "airflow-worker", "airflow-worker-gpu", "mlflow"):
        mounts = [v for v in services[name]["volumes"] if isinstance(v, dict)]
        assert {"type": "volume", "source": "transfertraj-data", "target": "/data"} in mounts, name
    assert services["airflow-worker"]["environment"]["TRANSFERTRAJ_HOME"] == "/data"
    assert services["spark-worker"]["environment"]["TRANSFERTRAJ_HOME"] == "/data"
    assert services["airflow-worker"]["environment"]["TRANSFERTRAJ_SPARK_MASTER"] == "spark://spark-master:7077"


def _strings(value, path=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{path}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}/{i}")
    elif isinstance(value, str):
        yield path, value


def test_no_secret_is_written_in_the_compose_file(raw):
    """Secrets come from .env: a secret-named variable, or a URL's password, is only ever a ${...}."""
    for path, text in _strings(raw):
        key = path.rsplit("/", 1)[-1]
        if SECRET_NAME.search(key) and not key.endswith("_FILE"):
            assert re.fullmatch(r"\$\{[A-Z0-9_]+(:?[-?][^}]*)?\}", text), f"{path} holds a literal: {text!r}"
            assert not re.fullmatch(r"\$\{[A-Z0-9_]+:?-[^}]+\}", text), f"{path} has a default secret"
        for password in re.findall(r"://[^:/@\s]*:([^@\s]*)@", text):
            assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", password), f"{path}: URL password {password!r}"
    redis = raw["services"]["redis"]["command"]
    assert re.fullmatch(r"\$\{REDIS_PASSWORD:\?[^}]*\}", redis[redis.index("--requirepass") + 1])


def test_required_secrets_stop_compose_when_missing(raw):
    with pytest.raises(MissingVariable):
        interpolate(raw, {})
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE_FILE.read_text()))
    example = read_env_file(ENV_EXAMPLE)
    assert required <= set(example), f"not in .env.example: {sorted(required - set(example))}"
    assert required >= {"POSTGRES_PASSWORD", "MLFLOW_DB_PASSWORD", "REDIS_PASSWORD", "AIRFLOW_JWT_SECRET"}


def test_env_file_is_ignored_and_the_example_holds_only_placeholders():
    ignored = REPO.joinpath(".gitignore").read_text().splitlines()
    assert ".env" in ignored
    assert ".env" in REPO.joinpath(".dockerignore").read_text().splitlines()
    for key, value in read_env_file(ENV_EXAMPLE).items():
        if SECRET_NAME.search(key):
            assert value == "change-me", f".env.example {key} must be a placeholder"


def test_interpolation_follows_compose_rules():
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("a${SET}b$$c", env) == "av" + "b$c"
    assert interpolate("${EMPTY:-d} ${EMPTY-d} ${UNSET-d}", env) == "d  d"
    with pytest.raises(MissingVariable):
        interpolate("${EMPTY:?needed}", env)
    assert interpolate("${EMPTY?needed}", env) == ""


def test_every_service_that_runs_project_code_uses_the_project_image(raw):
    """Drivers and executors must share Python, Java and code: one image, built from ./Dockerfile."""
    image = raw["services"]["spark-master"]["image"]
    for name in ("spark-worker", "mlflow", "airflow-init", "airflow-worker", "airflow-worker-gpu") + tuple(
        AIRFLOW_COMPONENTS
    ):
        service = raw["services"][name]
        assert service["image"] == image and service["build"]["dockerfile"] == "Dockerfile", name


def test_dockerfile_installs_the_lock_and_prefetches_the_delta_jars():
    text = REPO.joinpath("Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert "openjdk-17-jre-headless" in text
    assert re.search(r"uv pip install .*-r /tmp/requirements\.txt", text)
    assert "COPY requirements.txt" in text
    assert "transfertraj spark-jars" in text
    assert ".env" in REPO.joinpath(".dockerignore").read_text().splitlines()
