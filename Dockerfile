# dbt-emarsys-sync as a dbt Cloud webhook receiver (`dbt-emarsys-sync serve`).
#
#   docker build -t dbt-emarsys-sync .                                      # DuckDB only
#   docker build --build-arg ADAPTERS="dbt-snowflake~=1.10" -t dbt-emarsys-sync .
#
# Run it with your dbt project mounted at /project (dbt_project.yml and a profiles.yml whose credentials
# come from environment variables) and the settings in the environment; see the README, "Run it from
# dbt Cloud". It listens on plain HTTP: put it behind a TLS reverse proxy.
FROM python:3.11-slim

# Your warehouse's dbt adapter(s), as pip requirement specifiers.
ARG ADAPTERS=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/dbt-emarsys-sync
COPY pyproject.toml README.md ./
COPY dbt_emarsys_sync ./dbt_emarsys_sync
RUN pip install . ${ADAPTERS}

# An unprivileged user; the only place it writes is /var/lib/dbt-emarsys-sync (downloaded run
# artifacts, sync results, dbt's logs), so the project can be mounted read-only.
RUN useradd --system --uid 10001 --home-dir /var/lib/dbt-emarsys-sync --create-home sync
USER sync
ENV DBT_PROJECT_DIR=/project \
    DBT_PROFILES_DIR=/project \
    DBT_TARGET_PATH=/var/lib/dbt-emarsys-sync/target \
    DBT_LOG_PATH=/var/lib/dbt-emarsys-sync/logs \
    DBT_SEND_ANONYMOUS_USAGE_STATS=false
WORKDIR /project

EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
CMD ["dbt-emarsys-sync", "serve", "--host", "0.0.0.0", "--port", "8080", "--log-format", "json"]
