#!/usr/bin/env bash
# Screenshot of the MLflow page that `dynsweep run` links to, in headless
# Chromium, with the UI served by `dynsweep ui` (stopped again afterwards).
#
#   benchmarks/ui_check.sh TRACKING_URI LINK [OUT.png]
#
# TRACKING_URI and LINK are the ones `dynsweep run` prints at the end
# ("serve the UI", "this sweep"). Needs chromium (e.g. apt-get install chromium).
# The page should be the runs table of the sweep's trials, named by their
# swept values (lr=…,bs=…,s…), not MLflow's GenAI overview.
set -euo pipefail
uri=${1:?tracking URI}; link=${2:?link printed by dynsweep run}; out=${3:-ui_check.png}
port=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.urlparse(sys.argv[1]).port or 5000)' "$link")
dynsweep=${DYNSWEEP:-dynsweep}

$dynsweep ui --tracking-uri "$uri" --port "$port" >/dev/null 2>&1 &
ui=$!
trap 'kill -TERM $ui 2>/dev/null; wait $ui 2>/dev/null || true' EXIT
for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    sleep 1
done
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1600,900 \
    --virtual-time-budget=20000 --screenshot="$out" "$link" 2>/dev/null
echo "screenshot: $out"
