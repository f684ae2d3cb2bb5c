#!/usr/bin/env bash
# An MLflow tracking server that serves artifacts itself, so Ray trials on any node log
# runs and artifacts over HTTP (artifact URIs `mlflow-artifacts:/...`) and need no access
# to the artifact store.
#
#   infra/mlflow-server.sh [start] [--backend URI] [--artifacts DIR|s3://...] [--host H]
#                          [--port P] [--workers W] [--wait] [--timeout S] [--run-dir D]
#                          [--jobs] [--dry-run] [-- EXTRA MLFLOW SERVER ARGS]
#   infra/mlflow-server.sh stop   [--port P] [--run-dir D]
#   infra/mlflow-server.sh status [--port P] [--run-dir D]
#
# Defaults: --backend ${MLFLOW_BACKEND_STORE_URI:-sqlite:///$PWD/mlruns.db}
#           --artifacts $PWD/mlartifacts  --host 127.0.0.1  --port 5000  --workers 1
#           --timeout 90 (for --wait)  --run-dir ${HARMONIA_MLFLOW_DIR:-/tmp/harmonia-mlflow-P}
#
# The backend URI is handed to mlflow through MLFLOW_BACKEND_STORE_URI, never on its command
# line, so a database password does not show in `ps`; printed URIs have it masked
# (postgresql://user:***@host/db). Better still, keep the password out of the URI: for
# PostgreSQL use ~/.pgpass or PGPASSWORD, and pass the URI itself in MLFLOW_BACKEND_STORE_URI.
#
# The server binds to 127.0.0.1 unless --host says otherwise. MLflow has no login by
# default: reach it from elsewhere through an SSH tunnel (see infra/README.md) rather than
# binding 0.0.0.0. --jobs keeps MLflow's job runner (huey consumers for its GenAI features,
# which harmonia does not use; off by default: 7 fewer processes). The pid file
# (run dir/mlflow.pid) holds the server's process group, which `stop` ends as a whole
# (server and its uvicorn/gunicorn workers), nothing else.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
die() { echo "mlflow-server.sh: $*" >&2; exit 1; }

if ! command -v mlflow >/dev/null 2>&1 && [[ -x "$REPO/.venv/bin/mlflow" ]]; then
    export PATH="$REPO/.venv/bin:$PATH"
fi
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
    if command -v mlflow >/dev/null 2>&1 && [[ -x "$(dirname "$(command -v mlflow)")/python" ]]; then
        PY="$(dirname "$(command -v mlflow)")/python"
    else
        PY="$(command -v python3)"
    fi
fi
TOOL=("$PY" "$HERE/infra_tool.py")
mask() { "${TOOL[@]}" mask-uri "$1"; }

CMD=start
case "${1:-}" in start|stop|status) CMD="$1"; shift ;; esac
BACKEND="${MLFLOW_BACKEND_STORE_URI:-}"; ARTIFACTS=""; HOST=127.0.0.1; PORT=5000; WORKERS=1
WAIT=0; TIMEOUT=90; RUN_DIR=""; DRY=0; EXTRA=(); JOBS="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --backend|--backend-store-uri) BACKEND="$2"; shift 2 ;;
        --backend=*|--backend-store-uri=*) BACKEND="${1#*=}"; shift ;;
        --artifacts|--artifacts-destination) ARTIFACTS="$2"; shift 2 ;;
        --artifacts=*|--artifacts-destination=*) ARTIFACTS="${1#*=}"; shift ;;
        --host) HOST="$2"; shift 2 ;;
        --host=*) HOST="${1#*=}"; shift ;;
        --port) PORT="$2"; shift 2 ;;
        --port=*) PORT="${1#*=}"; shift ;;
        --workers) WORKERS="$2"; shift 2 ;;
        --workers=*) WORKERS="${1#*=}"; shift ;;
        --wait) WAIT=1; shift ;;
        --timeout) TIMEOUT="$2"; shift 2 ;;
        --timeout=*) TIMEOUT="${1#*=}"; shift ;;
        --run-dir) RUN_DIR="$2"; shift 2 ;;
        --run-dir=*) RUN_DIR="${1#*=}"; shift ;;
        --dry-run) DRY=1; shift ;;
        --jobs) JOBS=true; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ "$PORT" =~ ^[0-9]+$ ]] || die "--port must be a number"
[[ "$WORKERS" =~ ^[0-9]+$ ]] || die "--workers must be a whole number"
RUN_DIR="${RUN_DIR:-${HARMONIA_MLFLOW_DIR:-${TMPDIR:-/tmp}/harmonia-mlflow-$PORT}}"
case "$RUN_DIR" in /*) ;; *) RUN_DIR="$PWD/$RUN_DIR" ;; esac
PID_FILE="$RUN_DIR/mlflow.pid"
LOG_FILE="$RUN_DIR/mlflow.log"
CLIENT_HOST="$HOST"
case "$HOST" in 0.0.0.0|::|"[::]"|"") CLIENT_HOST=127.0.0.1 ;; esac
[[ "$CLIENT_HOST" == *:* && "$CLIENT_HOST" != \[* ]] && CLIENT_HOST="[$CLIENT_HOST]"
URL="http://$CLIENT_HOST:$PORT"

# pid of a running server from the pid file, or nothing
server_pid() {
    [[ -f "$PID_FILE" ]] || return 0
    local pid; pid="$(cat "$PID_FILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "mlflow.* server"; then
        echo "$pid"
    fi
}

cmd_status() {
    local pid; pid="$(server_pid)"
    if [[ -z "$pid" ]]; then echo "no MLflow server from this script on port $PORT"; return 3; fi
    echo "MLflow server pid $pid, $URL, log $LOG_FILE"
    if "${TOOL[@]}" wait-http "$URL/health" --timeout 2; then echo "health: OK"; else echo "health: not answering yet"; fi
    echo "listening on: $("${TOOL[@]}" listeners "$pid" | paste -sd ' ' -)"
}

cmd_stop() {
    local pid; pid="$(server_pid)"
    if [[ -z "$pid" ]]; then
        echo "no MLflow server from this script on port $PORT"
        rm -f "$PID_FILE"
        return 0
    fi
    # the server was started with setsid: its pid is its process group id
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local t
    for t in $(seq 1 50); do
        pgrep -g "$pid" >/dev/null 2>&1 || break
        sleep 0.2
    done
    if pgrep -g "$pid" >/dev/null 2>&1; then
        kill -KILL -- "-$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$PID_FILE"
    echo "MLflow server (pid $pid, port $PORT) stopped"
}

cmd_start() {
    local pid; pid="$(server_pid)"
    [[ -z "$pid" ]] || die "already running (pid $pid, $URL): '$0 stop --port $PORT' first"

    # defaults: the same store as harmonia's default tracking config, made absolute
    BACKEND="${BACKEND:-sqlite:///$PWD/mlruns.db}"
    ARTIFACTS="${ARTIFACTS:-$PWD/mlartifacts}"
    if [[ "$BACKEND" == sqlite:///* ]]; then
        local db="${BACKEND#sqlite:///}"
        case "$db" in /*) ;; *) db="$PWD/$db" ;; esac
        BACKEND="sqlite:///$db"
        ((DRY)) || mkdir -p "$(dirname "$db")"
    elif [[ "$BACKEND" != *://* ]]; then
        die "--backend must be a database URI (sqlite:///PATH, postgresql://USER@HOST/DB, ...)"
    fi
    if [[ "$ARTIFACTS" != *://* ]]; then
        case "$ARTIFACTS" in /*) ;; *) ARTIFACTS="$PWD/$ARTIFACTS" ;; esac
        ((DRY)) || mkdir -p "$ARTIFACTS"
    fi

    local args=(mlflow server --host "$HOST" --port "$PORT" --workers "$WORKERS"
                --serve-artifacts --artifacts-destination "$ARTIFACTS" ${EXTRA[@]+"${EXTRA[@]}"})
    local shown; shown="$(mask "$BACKEND")"
    if ((DRY)); then
        echo "would run: MLFLOW_BACKEND_STORE_URI='$shown' ${args[*]}"
        echo "tracking URI: $URL"
        return 0
    fi
    [[ -n "$("${TOOL[@]}" free-ports 1 --start "$PORT" | grep -x "$PORT")" ]] \
        || die "port $PORT is taken by another process: choose --port"

    mkdir -p "$RUN_DIR"; chmod 700 "$RUN_DIR"
    case "$HOST" in
        127.*|localhost|::1) ;;
        *) echo "WARNING: binding to $HOST: MLflow has no authentication by default; anyone who" >&2
           echo "         reaches this port can read and change runs. Prefer 127.0.0.1 + an SSH tunnel," >&2
           echo "         and set --allowed-hosts (pass after --) when serving other hosts." >&2 ;;
    esac
    # setsid: own process group (stop ends exactly it); the backend URI goes by env only
    MLFLOW_BACKEND_STORE_URI="$BACKEND" MLFLOW_SERVER_ENABLE_JOB_EXECUTION="$JOBS" setsid "${args[@]}" >"$LOG_FILE" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PID_FILE"

    echo "MLflow tracking server starting (pid $pid)"
    echo "  backend:      $shown"
    echo "  artifacts:    $ARTIFACTS (served by the server; clients use mlflow-artifacts:/ URIs)"
    echo "  bound to:     $HOST:$PORT"
    echo "  log:          $LOG_FILE   pid file: $PID_FILE"
    echo "  stop:         $0 stop --port $PORT$([[ "$RUN_DIR" == "${TMPDIR:-/tmp}/harmonia-mlflow-$PORT" ]] || echo " --run-dir $RUN_DIR")"
    if ((WAIT)); then
        local deadline=$((SECONDS + TIMEOUT))
        until "${TOOL[@]}" wait-http "$URL/health" --timeout 2; do
            if ! kill -0 "$pid" 2>/dev/null; then
                echo "---- the server exited; last lines of $LOG_FILE:" >&2
                tail -n 30 "$LOG_FILE" >&2
                rm -f "$PID_FILE"
                exit 1
            fi
            if ((SECONDS >= deadline)); then
                echo "---- no answer from $URL/health after ${TIMEOUT}s; stopping it. Log tail:" >&2
                tail -n 30 "$LOG_FILE" >&2
                cmd_stop >&2
                exit 1
            fi
        done
        echo "  health:       OK"
    fi
    echo "tracking URI: $URL"
    echo "export MLFLOW_TRACKING_URI=$URL"
}

case "$CMD" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
esac
