#!/usr/bin/env bash
# A real MLflow tracking server for a dynsweep cluster (this folder is not a
# Python package: it must never shadow `import mlflow`).
#
#   mlflow/start_server.sh                      # 127.0.0.1:5000, sqlite under runs/
#   HOST=0.0.0.0 mlflow/start_server.sh         # reachable from worker nodes (use auth!)
#   BACKEND_URI=postgresql://user:pw@db:5432/mlflow mlflow/start_server.sh
#   AUTH=1 mlflow/start_server.sh               # basic auth (mlflow's basic-auth app);
#                                               # users in mlflow/basic_auth.ini
#
# Workers then log with MLFLOW_TRACKING_URI=http://<host>:<port> (dynsweep run
# --tracking-uri http://<host>:<port>); artifacts are proxied by the server
# (--serve-artifacts), so workers need no shared filesystem for them.
set -euo pipefail
cd "$(dirname "$0")/.."

HOST=${HOST:-127.0.0.1}
PORT=${PORT:-5000}
mkdir -p runs
BACKEND_URI=${BACKEND_URI:-sqlite:///$(pwd)/runs/mlflow.db}
ARTIFACTS=${ARTIFACTS:-$(pwd)/runs/mlflow-artifacts}
PY=${PY:-.venv/bin/python}

args=(server --host "$HOST" --port "$PORT" --backend-store-uri "$BACKEND_URI"
      --artifacts-destination "$ARTIFACTS" --serve-artifacts)
if [[ "${AUTH:-0}" == "1" ]]; then
  export MLFLOW_AUTH_CONFIG_PATH=${MLFLOW_AUTH_CONFIG_PATH:-$(pwd)/mlflow/basic_auth.ini}
  args+=(--app-name basic-auth)
fi
echo "MLflow server on http://$HOST:$PORT  backend=$BACKEND_URI  artifacts=$ARTIFACTS"
exec "$PY" -m mlflow "${args[@]}"
