#!/usr/bin/env bash
# The main job on the embedded default: start a server, create a process pool, deploy an
# example with a schedule, run it, show its logs and final state, then stop the server.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export PUSHPOOL_HOME="${PUSHPOOL_HOME:-$HOME/.pushpool}"
export PUSHPOOL_PORT="${PUSHPOOL_PORT:-4300}"
export PUSHPOOL_API_URL="http://127.0.0.1:${PUSHPOOL_PORT}"
log="$PUSHPOOL_HOME/server.log"
mkdir -p "$PUSHPOOL_HOME"

echo "==> starting the server (log: $log)"
pushpool server start --port "$PUSHPOOL_PORT" >"$log" 2>&1 &
server=$!
trap 'kill -INT $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fsS "$PUSHPOOL_API_URL/api/health" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done

echo "==> creating the work pool 'local' (type process)"
pushpool work-pool inspect local >/dev/null 2>&1 || pushpool work-pool create local --type process
pushpool work-pool ls

echo "==> deploying examples/hello (a cron schedule, every 5 minutes)"
(cd "$here/hello" && pushpool deploy --all)

echo "==> running it now and watching it"
pushpool deployment run 'hello/hello-every-5-minutes' --param name=pushpool --watch

echo "==> the pool's next scheduled runs"
pushpool work-pool preview local --limit 3
echo "==> recent runs"
pushpool run ls --limit 5
