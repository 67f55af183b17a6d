# syntax=docker/dockerfile:1
# The one project image: Spark master/workers, Airflow components and workers, the MLflow server and the
# one-shot init all run it (docker-compose.yml), so drivers and executors share Python, Java and code.
#
#   docker build -t transfertraj:latest .
#   docker build --build-arg WITH_BROWSER=1 -t transfertraj:test .   # + Chromium, for the page test
#
# Dependencies come from the lock (requirements.txt) exactly as scripts/bootstrap.sh installs them; torch
# from PyPI brings its CUDA libraries, so the same image serves the CPU and the GPU Celery workers.

# bookworm pinned: its openjdk-17 is what Spark 4 was proved with (trixie ships Java 21 only).
FROM python:3.11-slim-bookworm

ARG UV_VERSION=0.13.9
ARG APP_UID=50000

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    JAVA_HOME=/usr/lib/jvm/java-17 \
    TRANSFERTRAJ_APP=/opt/transfertraj/app \
    TRANSFERTRAJ_CACHE=/opt/transfertraj/cache \
    TRANSFERTRAJ_HOME=/data \
    AIRFLOW_HOME=/opt/transfertraj/airflow

# procps: Spark's launch scripts call ps; tini reaps the JVM's and Celery's children.
# Chromium (Debian package) only with --build-arg WITH_BROWSER=1: no service of this image serves the
# trip page (`transfertraj predict --html` writes one self-contained file, no browser involved); a
# browser is needed only to run tests/transfertraj/test_trip_page.py's rendering checks inside the
# image, and would add ~300 MB to every Spark, Airflow and MLflow container.
ARG WITH_BROWSER=0
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps tini curl \
 && if [ "${WITH_BROWSER}" = "1" ]; then apt-get install -y --no-install-recommends chromium; fi \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s "/usr/lib/jvm/java-17-openjdk-$(dpkg --print-architecture)" /usr/lib/jvm/java-17

RUN pip install "uv==${UV_VERSION}"

# The lock first, on its own layer: code edits do not reinstall 6 GB of wheels.
COPY requirements.txt /tmp/requirements.txt
RUN uv pip install --system --no-cache -r /tmp/requirements.txt
# Airflow imports 2-3x faster from bytecode (the dag-processor imports constantly); best effort, since a
# few wheels ship test files that are not Python 3.
RUN python -m compileall -q -j 0 /usr/local/lib/python3.11/site-packages >/dev/null || true

RUN useradd --uid "${APP_UID}" --gid 0 --create-home --home-dir /home/transfertraj transfertraj \
 && mkdir -p "${TRANSFERTRAJ_APP}" "${TRANSFERTRAJ_CACHE}" "${TRANSFERTRAJ_HOME}" "${AIRFLOW_HOME}" \
 && chown -R transfertraj:0 /opt/transfertraj "${TRANSFERTRAJ_HOME}" \
 && chmod -R g+rwX /opt/transfertraj "${TRANSFERTRAJ_HOME}"

WORKDIR ${TRANSFERTRAJ_APP}
# The checkout less what .dockerignore leaves out (venvs, data roots, git history).
COPY --chown=transfertraj:0 . .
RUN uv pip install --system --no-cache --no-deps -e . && mkdir -p dags

USER transfertraj
# Delta Lake's jars resolved once at build time (Maven Central through Ivy) into the image's cache, with
# the manifest that makes every later session start offline (jobs/spark_session.py).
RUN transfertraj spark-jars && ls "${TRANSFERTRAJ_CACHE}/ivy/jars" | grep -q delta-spark

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["transfertraj", "--help"]
