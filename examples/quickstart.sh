#!/usr/bin/env bash
# The main job on the embedded default (`make demo`): start a server, create a process
# pool, deploy the classic first flow from a git repository with a cron schedule, run it,
# show its logs and final state; then deploy a pushpool.yaml example; then stop.
#
# No internet is needed: the git repository is a local one made from examples/, and
# unless PUSHPOOL_DEMO_ONLINE=1 the GitHub API is a local stand-in (examples/local_github.py).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export PUSHPOOL_HOME="${PUSHPOOL_HOME:-$HOME/.pushpool}"
export PUSHPOOL_PORT="${PUSHPOOL_PORT:-4300}"
export PUSHPOOL_API_URL="http://127.0.0.1:${PUSHPOOL_PORT}"
mkdir -p "$PUSHPOOL_HOME"
log="$PUSHPOOL_HOME/server.log"
pids=()
# SIGTERM, not SIGINT: background jobs of a script start with SIGINT ignored.
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_for_url() {  # URL PID: poll until it answers, fail if the process died
  for _ in $(seq 1 150); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || { echo "failed to start; see $log" >&2; tail -20 "$log" >&2; exit 1; }
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2; exit 1
}

echo "==> pushpool server start (API, scheduler and dispatcher; log: $log)"
pushpool server start --port "$PUSHPOOL_PORT" >"$log" 2>&1 &
pids+=($!)
wait_for_url "$PUSHPOOL_API_URL/api/health" "${pids[-1]}"

if [ "${PUSHPOOL_DEMO_ONLINE:-0}" != 1 ]; then
  github_port=$((PUSHPOOL_PORT + 1))
  python "$here/local_github.py" "$github_port" &
  pids+=($!)
  export PUSHPOOL_EXAMPLE_GITHUB_API="http://127.0.0.1:$github_port"
  wait_for_url "$PUSHPOOL_EXAMPLE_GITHUB_API/repos/PrefectHQ/prefect" "${pids[-1]}"
fi

echo "==> pushpool work-pool create local --type process"
pushpool work-pool inspect local >/dev/null 2>&1 || pushpool work-pool create local --type process
pushpool work-pool ls

echo "==> a git repository holding the flow (stands in for one on GitHub)"
repo="$PUSHPOOL_HOME/demo-repo"
rm -rf "$repo" && mkdir -p "$repo" && cp "$here/repo_info.py" "$repo/"
git -C "$repo" init -q -b main
git -C "$repo" -c user.name=pushpool -c user.email=demo@pushpool.invalid add repo_info.py
git -C "$repo" -c user.name=pushpool -c user.email=demo@pushpool.invalid commit -qm "first flow"

echo "==> python repo_info.py file://$repo   (from_source + deploy, cron '0 1 * * *')"
(cd "$here" && python repo_info.py "file://$repo")

echo "==> pushpool deployment run 'get-repo-info/my-first-deployment' --watch"
pushpool deployment run 'get-repo-info/my-first-deployment' --watch

run_id="$(pushpool run ls --deployment get-repo-info/my-first-deployment --limit 1 --output json \
  | python -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])')"
echo "==> pushpool run logs $run_id"
pushpool run logs "$run_id"
echo "==> pushpool run inspect $run_id"
pushpool run inspect "$run_id"

echo "==> pushpool deploy (examples/hello/pushpool.yaml: a command and a cron schedule)"
(cd "$here/hello" && pushpool deploy --all)
pushpool deployment run 'hello/hello-every-5-minutes' --param name=pushpool --watch
echo "==> the pool's next scheduled runs"
pushpool work-pool preview local --limit 3
