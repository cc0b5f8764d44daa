# One image for every stridecare process: web, worker, beat, watcher and the one-shot migration.
# docker-compose.yml picks the process with `command:`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the package build needs. Copying the whole context would also copy a local .venv, the SQLite
# data of a developer's embedded run and, worst, a filled-in .env with secrets into an image layer.
# The package list mirrors [tool.setuptools.packages.find] in pyproject.toml (tests/test_compose.py checks it).
COPY pyproject.toml ./
COPY stridecare ./stridecare
COPY stridecare_app ./stridecare_app
COPY ingest ./ingest
COPY workers ./workers
COPY recommender ./recommender
COPY delivery ./delivery
# A regular (not editable) install: the processes import from site-packages, so /src can go.
RUN pip install '.[fast]' && rm -rf /src

# Never run as root. /data is the data home (quarantine, beat schedule) and the mount point of the inbox;
# a named volume mounted there starts out with this ownership.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/stridecare stridecare \
    && mkdir -p /data/inbox /data/quarantine \
    && chown -R stridecare:stridecare /data
USER stridecare
WORKDIR /home/stridecare

ENV STRIDECARE_DATA_HOME=/data
EXPOSE 8080
CMD ["stridecare", "--help"]
