#!/usr/bin/env bash
# Set up and run the project on a machine with Python 3.11+ and nothing else.
#
#   ./dev.sh demo          build the sample dbt project (DuckDB), start the bundled Emarsys API,
#                          sync the sample's contacts to it and print the summary
#   ./dev.sh test [ARGS]   install the test dependencies and run the whole test suite (pytest ARGS);
#                          without ARGS the dbt-facing tests run again on dbt-core 1.10 (the lowest
#                          supported; SKIP_LOWEST_DBT=1 skips that)
#   ./dev.sh setup         only create .venv and install the project into it
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
VENV=$ROOT/.venv
PYTHON=${PYTHON:-python3}
# dbt's anonymous usage tracking calls dbt Labs' collector on every dbt command: nothing here
# reaches beyond loopback.
export DO_NOT_TRACK=1

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed")'
    "$PYTHON" -m venv "$VENV"
  fi
  # Reinstall only when the dependency list changed since the last install.
  local stamp="$VENV/.installed-$(cksum < pyproject.toml | cut -d' ' -f1)-$1"
  if [ ! -f "$stamp" ]; then
    echo "== installing dbt-emarsys-sync and its dependencies into .venv (log: .venv/install.log)"
    if ! { "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
           "$VENV/bin/python" -m pip install --disable-pip-version-check -e ".[$1]"; } \
         > "$VENV/install.log" 2>&1; then
      tail -30 "$VENV/install.log" >&2
      echo "installation failed; the whole log is in .venv/install.log" >&2
      exit 1
    fi
    rm -f "$VENV"/.installed-*
    touch "$stamp"
  fi
}

free_port() {
  "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

demo() {
  setup test
  cd "$ROOT/sample_dbt_project"
  echo "== dbt build (sample project on DuckDB)"
  "$VENV/bin/dbt" build --profiles-dir . --quiet
  local port; port=$(free_port)
  echo "== starting the bundled Emarsys API on 127.0.0.1:$port"
  "$VENV/bin/dbt-emarsys-sync" emulator --port "$port" --rate-limit 0 \
      --store target/emulator_store.json > target/emulator.log 2>&1 &
  EMULATOR_PID=$!
  trap 'kill $EMULATOR_PID 2>/dev/null || true; wait $EMULATOR_PID 2>/dev/null || true' EXIT
  "$VENV/bin/python" - "$port" <<'PY'
import sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/_emulator/health"
for _ in range(300):
    try:
        urllib.request.urlopen(url, timeout=1); sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit("the emulator did not start; see sample_dbt_project/target/emulator.log")
PY
  echo "== dbt-emarsys-sync run"
  local rc=0
  EMARSYS_API_URL="http://127.0.0.1:$port" \
  EMARSYS_AUTH_URL="http://127.0.0.1:$port/oauth2/token" \
  EMARSYS_CLIENT_ID=sandbox-client EMARSYS_CLIENT_SECRET=sandbox-client-secret \
    "$VENV/bin/dbt-emarsys-sync" run || rc=$?
  # Exit code 1 means "synced, with rejected rows": the sample data holds a few invalid emails on
  # purpose, so the demo counts that as success. Anything else is a real failure.
  if [ "$rc" -eq 1 ]; then
    echo "== done: the rejected rows above are the sample's deliberately invalid emails"
    rc=0
  fi
  return "$rc"
}

tests() {
  setup test
  # The adapter tests start a throwaway PostgreSQL server; install its binaries when missing.
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "== installing PostgreSQL (for the adapter tests)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
      echo "PostgreSQL binaries (initdb, pg_ctl) are missing: install the postgresql package" >&2
      exit 1
    fi
  fi
  "$VENV/bin/python" -m pytest -n "${PYTEST_WORKERS:-2}" "$@"
  # The whole suite (no ARGS, as CI runs it) also proves the lowest dbt-core the project supports: the
  # dbt-facing tests (marker `dbt`) again in a second venv with dbt-core 1.10 (.venv above has the newest).
  if [ "$#" -eq 0 ] && [ "${SKIP_LOWEST_DBT:-}" != 1 ]; then
    lowest_dbt_tests
  fi
}

LOWEST_DBT=1.10
lowest_dbt_tests() {
  local venv="$VENV/lowest-dbt"   # inside .venv: ignored by git, removed with it
  local stamp="$venv/.installed-$(cksum < pyproject.toml | cut -d' ' -f1)-$LOWEST_DBT"
  if [ ! -f "$stamp" ]; then
    echo "== installing dbt-core $LOWEST_DBT into .venv/lowest-dbt (log: .venv/lowest-dbt.log)"
    rm -rf "$venv"
    if ! { "$VENV/bin/python" -m venv "$venv" &&
           "$venv/bin/python" -m pip install --disable-pip-version-check -e ".[test]" \
             "dbt-core==$LOWEST_DBT.*" "dbt-duckdb==$LOWEST_DBT.*"; } > "$VENV/lowest-dbt.log" 2>&1; then
      tail -30 "$VENV/lowest-dbt.log" >&2
      echo "installation of dbt-core $LOWEST_DBT failed; the whole log is in .venv/lowest-dbt.log" >&2
      exit 1
    fi
    touch "$stamp"
  fi
  echo "== dbt-facing tests on dbt-core $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("dbt-core"))')"
  "$venv/bin/python" -m pytest -n "${PYTEST_WORKERS:-2}" -m dbt -p no:cacheprovider
}

case "${1:-}" in
  demo) demo ;;
  test) shift; tests "$@" ;;
  setup) setup test ;;
  *) sed -n '2,11p' "$0"; exit 2 ;;
esac
