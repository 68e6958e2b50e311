#!/usr/bin/env bash
# A real MLflow tracking server for a dynsweep cluster (this folder is not a
# Python package: it must never shadow `import mlflow`).
#
#   mlflow/start_server.sh                      # 127.0.0.1:5000, sqlite + artifacts under runs/
#   AUTH=1 mlflow/start_server.sh               # basic auth (MLflow's basic-auth app)
#   AUTH=1 HOST=0.0.0.0 mlflow/start_server.sh  # reachable from worker nodes: always with auth
#   BACKEND_URI=postgresql://user:pw@db:5432/mlflow mlflow/start_server.sh   # needs .[postgres]
#
# Settings (environment): HOST, PORT, BACKEND_URI, ARTIFACTS, WORKERS (MLflow's
# default 4), STATE_DIR (default runs/: the sqlite store, artifacts and the
# files below), AUTH_DB_URI (AUTH=1's user database; default sqlite in
# STATE_DIR, or a PostgreSQL URI like BACKEND_URI), PY (default .venv/bin/python).
# A PostgreSQL URI is used with psycopg (3), the driver of the [postgres] extra.
#
# With AUTH=1 nothing secret is committed; on first start the script makes,
# each a random string in a mode-600 file under STATE_DIR that later starts reuse:
#   mlflow-server-secret    Flask's session secret (unless MLFLOW_FLASK_SERVER_SECRET_KEY is set)
#   mlflow-admin-password   the admin's password (unless MLFLOW_AUTH_ADMIN_PASSWORD is set);
#                           the admin user (MLFLOW_AUTH_ADMIN_USERNAME, default admin) is
#                           created with it when the user database is new
#   mlflow-auth.ini         the auth settings: users in mlflow-auth.db, everyone may read
#                           (default_permission READ), writers need an account
# Clients log with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD set.
#
# Workers then log with MLFLOW_TRACKING_URI=http://<host>:<port> (dynsweep run
# --tracking-uri http://<host>:<port>); artifacts are proxied by the server
# (--serve-artifacts), so workers need no shared filesystem for them.
set -euo pipefail
cd "$(dirname "$0")/.."

HOST=${HOST:-127.0.0.1}
PORT=${PORT:-5000}
PY=${PY:-.venv/bin/python}
STATE_DIR=$(mkdir -p "${STATE_DIR:-runs}" && cd "${STATE_DIR:-runs}" && pwd)
BACKEND_URI=${BACKEND_URI:-sqlite:///$STATE_DIR/mlflow.db}
ARTIFACTS=${ARTIFACTS:-$STATE_DIR/mlflow-artifacts}

fail() { echo "error: $*" >&2; exit 1; }

# secret FILE: the file's content; a random one, mode 600, made on first use
secret() {
  if [[ ! -s "$1" ]]; then
    (umask 077 && "$PY" -c 'import secrets; print(secrets.token_urlsafe(32))' > "$1")
    echo "generated $1 (mode 600)" >&2
  fi
  cat "$1"
}

# pg_uri URI: a PostgreSQL URI with its driver named. SQLAlchemy's default
# driver for postgresql:// depends on its version (psycopg2 before 2.1, psycopg 3
# since), so postgresql:// and postgres:// become postgresql+psycopg://, the
# driver the [postgres] extra installs; a URI naming another driver keeps it.
# Fails in one line when the driver does not import.
pg_uri() {
  local uri=$1 module
  case "$uri" in
    postgresql://*|postgres://*) uri="postgresql+psycopg://${uri#*://}" ;;
    postgresql+*://*) ;;
    *) echo "$uri"; return ;;
  esac
  module=${uri#postgresql+}; module=${module%%://*}
  "$PY" -c "import $module" 2>/dev/null \
    || fail "a PostgreSQL store ($(shown "$uri")) needs the $module driver: pip install -e '.[postgres]'"
  echo "$uri"
}
# the URI as logs may show it: no password
shown() { sed -E 's#^([a-z0-9+]+://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"; }

BACKEND_URI=$(pg_uri "$BACKEND_URI")
AUTH_DB_URI=$(pg_uri "${AUTH_DB_URI:-sqlite:///$STATE_DIR/mlflow-auth.db}")

args=(server --host "$HOST" --port "$PORT" --backend-store-uri "$BACKEND_URI"
      --artifacts-destination "$ARTIFACTS" --serve-artifacts)
[[ -n "${WORKERS:-}" ]] && args+=(--workers "$WORKERS")

if [[ "${AUTH:-0}" == "1" ]]; then
  "$PY" -c 'import flask_wtf' 2>/dev/null || fail "AUTH=1 needs Flask-WTF: pip install -e . (mlflow[auth])"
  export MLFLOW_FLASK_SERVER_SECRET_KEY=${MLFLOW_FLASK_SERVER_SECRET_KEY:-$(secret "$STATE_DIR/mlflow-server-secret")}
  export MLFLOW_AUTH_ADMIN_USERNAME=${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
  export MLFLOW_AUTH_ADMIN_PASSWORD=${MLFLOW_AUTH_ADMIN_PASSWORD:-$(secret "$STATE_DIR/mlflow-admin-password")}
  export MLFLOW_AUTH_CONFIG_PATH=$STATE_DIR/mlflow-auth.ini
  (umask 077 && cat > "$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
default_permission = READ
database_uri = $AUTH_DB_URI
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
)
  args+=(--app-name basic-auth)
  echo "basic auth: admin user $MLFLOW_AUTH_ADMIN_USERNAME; clients set MLFLOW_TRACKING_USERNAME" \
       "and MLFLOW_TRACKING_PASSWORD" >&2
elif [[ "$HOST" != 127.0.0.1 && "$HOST" != localhost ]]; then
  echo "warning: $HOST:$PORT without AUTH=1: anyone who reaches it can read and write every run" >&2
fi
echo "MLflow server on http://$HOST:$PORT  backend=$(shown "$BACKEND_URI")  artifacts=$ARTIFACTS" >&2
exec "$PY" -m mlflow "${args[@]}"
