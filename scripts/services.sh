#!/usr/bin/env bash
# Local services for Proxy3D, as plain processes bound to 127.0.0.1:
#   Prefect server (API + UI), MLflow server (SQLite, --workers 1), a Prefect process worker for the pool.
# `scripts/services.sh start` starts what is not running, waits until each is healthy, creates the work
# pool (concurrency limit 1) and deploys prefect.yaml; `scripts/services.sh stop` stops exactly the
# process groups whose pids it wrote under $SERVICES_DIR; `status` prints them.
# Every setting can be overridden from the environment (the tests run a second copy on free ports):
#   PROJECT_DIR (this checkout)  SERVICES_DIR ($PROJECT_DIR/.services)  PREFECT_HOME ($PROJECT_DIR/.prefect)
#   PREFECT_PORT (4200)  MLFLOW_PORT (5000)  POOL (proxy3d)  VENV (<repo>/.venv)  HEALTH_TIMEOUT (90 s)
#   HEARTBEAT (30 s, flow-run heartbeats)  ZOMBIE_AFTER (90 s without heartbeat -> the run is marked Crashed)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PROJECT_DIR=$(cd "${PROJECT_DIR:-$REPO}" && pwd)
SERVICES_DIR=${SERVICES_DIR:-$PROJECT_DIR/.services}
VENV=${VENV:-$REPO/.venv}
PREFECT_PORT=${PREFECT_PORT:-4200}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
POOL=${POOL:-proxy3d}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-90}
ZOMBIE_AFTER=${ZOMBIE_AFTER:-90}
WORKER_NAME=proxy3d-worker-$PREFECT_PORT
export PREFECT_FLOWS_HEARTBEAT_FREQUENCY=${HEARTBEAT:-30}
export PREFECT_HOME=${PREFECT_HOME:-$PROJECT_DIR/.prefect}
export PREFECT_API_URL="http://127.0.0.1:$PREFECT_PORT/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_SERVER_API_PORT=$PREFECT_PORT
export PREFECT_UI_API_URL="http://127.0.0.1:$PREFECT_PORT/api"
export MLFLOW_TRACKING_URI="http://127.0.0.1:$MLFLOW_PORT" MLFLOW_DISABLE_TELEMETRY=true
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false DVC_NO_ANALYTICS=1 PROXY3D_TRACKING=1 PROXY3D_ROOT=$PROJECT_DIR
export PATH="$VENV/bin:$PATH"

log() { echo "services: [${SECONDS}s] $*"; }

alive() {  # alive NAME -> 0 when the pid in NAME.pid runs
  local f=$SERVICES_DIR/$1.pid
  [[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

launch() {  # launch NAME CMD... -> new session (pgid = pid), output to NAME.log, pid to NAME.pid
  local name=$1; shift
  if alive "$name"; then log "$name already running (pid $(cat "$SERVICES_DIR/$name.pid"))"; return; fi
  : >"$SERVICES_DIR/$name.log"  # truncate now: the background redirection below happens later
  PYTHONUNBUFFERED=1 setsid "$@" >>"$SERVICES_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$SERVICES_DIR/$name.pid"
  log "$name started (pid $!, log $SERVICES_DIR/$name.log)"
}

wait_for() {  # wait_for NAME CHECK-CMD... -> poll until CHECK succeeds, the process dies, or timeout
  local name=$1; shift
  local deadline=$((SECONDS + HEALTH_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$name"; then log "$name exited; last log lines:"; tail -n 30 "$SERVICES_DIR/$name.log" >&2; exit 1; fi
    if ((SECONDS > deadline)); then log "$name not healthy after ${HEALTH_TIMEOUT}s; see $SERVICES_DIR/$name.log" >&2; exit 1; fi
    sleep 1
  done
  log "$name healthy"
}

worker_online() {  # this worker has logged that it started polling
  grep -q "Worker '$WORKER_NAME' started" "$SERVICES_DIR/prefect-worker.log"
}

start() {
  mkdir -p "$SERVICES_DIR" "$PREFECT_HOME"
  launch prefect-server prefect server start --host 127.0.0.1 --port "$PREFECT_PORT"
  launch mlflow-server mlflow server --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
    --backend-store-uri "sqlite:///$SERVICES_DIR/mlflow.db" --artifacts-destination "$SERVICES_DIR/mlartifacts"
  wait_for prefect-server curl -fsS "$PREFECT_API_URL/health"
  wait_for mlflow-server curl -fsS "$MLFLOW_TRACKING_URI/health"
  (cd "$REPO" && python -m flows.services_setup --pool "$POOL" --within "$ZOMBIE_AFTER") >/dev/null
  log "work pool $POOL (process, concurrency limit 1); runs without heartbeat for ${ZOMBIE_AFTER}s become Crashed"
  (cd "$PROJECT_DIR" && prefect --no-prompt deploy --all) >"$SERVICES_DIR/deploy.log" 2>&1 \
    || { log "deploy failed:"; tail -n 30 "$SERVICES_DIR/deploy.log" >&2; exit 1; }
  log "deployed $(grep -c 'Deployment .* successfully created' "$SERVICES_DIR/deploy.log" || true) deployments from $PROJECT_DIR/prefect.yaml"
  (cd "$PROJECT_DIR" && launch prefect-worker prefect worker start --pool "$POOL" --type process \
    --install-policy never --name "$WORKER_NAME")
  wait_for prefect-worker worker_online
  cat >"$SERVICES_DIR/env" <<EOF
export PREFECT_API_URL=$PREFECT_API_URL
export MLFLOW_TRACKING_URI=$MLFLOW_TRACKING_URI
EOF
  log "Prefect UI  http://127.0.0.1:$PREFECT_PORT"
  log "MLflow UI   $MLFLOW_TRACKING_URI"
  log "to log CLI runs to this server: source $SERVICES_DIR/env"
}

descendants() {  # descendants PID -> every process below PID (flow runs live in their own sessions)
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$child"; descendants "$child"; done
}

stop() {
  local name pid kids
  for name in prefect-worker mlflow-server prefect-server; do
    [[ -f $SERVICES_DIR/$name.pid ]] || continue
    pid=$(cat "$SERVICES_DIR/$name.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kids=$(descendants "$pid" | tr '\n' ' ')
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      # shellcheck disable=SC2086
      [[ -n $kids ]] && kill -TERM $kids 2>/dev/null || true
      for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      if kill -0 "$pid" 2>/dev/null; then
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      fi
      # shellcheck disable=SC2086
      [[ -n $kids ]] && kill -KILL $kids 2>/dev/null || true
      log "$name stopped (pid $pid${kids:+; and its runs $kids})"
    fi
    rm -f "$SERVICES_DIR/$name.pid"
  done
}

status() {
  local name
  for name in prefect-server mlflow-server prefect-worker; do
    if alive "$name"; then log "$name running (pid $(cat "$SERVICES_DIR/$name.pid"))"; else log "$name stopped"; fi
  done
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
