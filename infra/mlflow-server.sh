#!/usr/bin/env bash
# An MLflow tracking server that serves artifacts itself, so Ray trials on any node log
# runs and artifacts over HTTP (artifact URIs `mlflow-artifacts:/...`) and need no access
# to the artifact store.
#
#   infra/mlflow-server.sh [start] [--backend URI | --local-postgres [--pg-dir D] [--pg-bin DIR]]
#                          [--artifacts DIR|s3://...] [--host H] [--port P] [--workers W] [--wait]
#                          [--timeout S] [--run-dir D] [--jobs] [--dry-run] [-- EXTRA MLFLOW SERVER ARGS]
#   infra/mlflow-server.sh stop|down [--port P] [--run-dir D] [--purge]
#   infra/mlflow-server.sh status    [--port P] [--run-dir D]
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
# --local-postgres: a throwaway PostgreSQL as the backend store, made and started by this script
# (infra_tool.py pg-up): initdb in --pg-dir (default RUN_DIR/postgres) on first use, role and database
# `mlflow`, a random password kept in PG_DIR/pgpass (mode 600; mlflow reads it through PGPASSFILE,
# it is in no URI and never printed), listening on 127.0.0.1 only on a free port. Needs the server
# programs (initdb, pg_ctl, postgres: found on PATH, by pg_config, in /usr/lib/postgresql/*/bin, or
# --pg-bin / PG_BIN) and psycopg 3 in mlflow's env (pip install 'harmonia[postgres]'). As root it runs
# PostgreSQL as the user 'postgres' (or 'nobody'). `stop`/`down` stop the MLflow server and then that
# PostgreSQL; its data stay for the next start unless `--purge` deletes PG_DIR.
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
case "${1:-}" in start|stop|status) CMD="$1"; shift ;; down) CMD=stop; shift ;; esac
BACKEND="${MLFLOW_BACKEND_STORE_URI:-}"; ARTIFACTS=""; HOST=127.0.0.1; PORT=5000; WORKERS=1
WAIT=0; TIMEOUT=90; RUN_DIR=""; DRY=0; EXTRA=(); JOBS="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
LOCAL_PG=0; PG_DIR=""; PG_BIN_ARG=(); PURGE=0; BACKEND_GIVEN=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --backend|--backend-store-uri) BACKEND="$2"; BACKEND_GIVEN=1; shift 2 ;;
        --backend=*|--backend-store-uri=*) BACKEND="${1#*=}"; BACKEND_GIVEN=1; shift ;;
        --local-postgres) LOCAL_PG=1; shift ;;
        --pg-dir) PG_DIR="$2"; shift 2 ;;
        --pg-dir=*) PG_DIR="${1#*=}"; shift ;;
        --pg-bin) PG_BIN_ARG=(--pg-bin "$2"); shift 2 ;;
        --pg-bin=*) PG_BIN_ARG=(--pg-bin "${1#*=}"); shift ;;
        --purge) PURGE=1; shift ;;
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
PG_MARK="$RUN_DIR/postgres.dir"   # names the local PostgreSQL that `start --local-postgres` started
PG_DIR="${PG_DIR:-$RUN_DIR/postgres}"
case "$PG_DIR" in /*) ;; *) PG_DIR="$PWD/$PG_DIR" ;; esac
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
    if [[ -f "$PG_MARK" ]]; then
        echo "local PostgreSQL ($(cat "$PG_MARK")): $("${TOOL[@]}" pg-status --dir "$(cat "$PG_MARK")" || true)"
    fi
}

# the local PostgreSQL of `start --local-postgres` (named by PG_MARK, else --pg-dir if pg-up made it)
stop_local_pg() {
    local dir=""
    if [[ -f "$PG_MARK" ]]; then dir="$(cat "$PG_MARK")"
    elif [[ -f "$PG_DIR/harmonia-postgres.json" ]]; then dir="$PG_DIR"
    fi
    [[ -n "$dir" ]] || return 0
    local args=(pg-down --dir "$dir"); ((PURGE)) && args+=(--purge)
    "${TOOL[@]}" "${args[@]}" || return 1
    rm -f "$PG_MARK"
}

cmd_stop() {
    local pid; pid="$(server_pid)"
    if [[ -z "$pid" ]]; then
        echo "no MLflow server from this script on port $PORT"
        rm -f "$PID_FILE"
        stop_local_pg
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
    stop_local_pg
}

cmd_start() {
    local pid; pid="$(server_pid)"
    [[ -z "$pid" ]] || die "already running (pid $pid, $URL): '$0 stop --port $PORT' first"

    if ((LOCAL_PG)); then
        ((BACKEND_GIVEN == 0)) || die "--local-postgres and --backend exclude each other"
        BACKEND=""
        "${TOOL[@]}" pg-bin ${PG_BIN_ARG[@]+"${PG_BIN_ARG[@]}"} >/dev/null || exit 1
    fi
    # defaults: the same store as harmonia's default tracking config, made absolute
    ((LOCAL_PG)) || BACKEND="${BACKEND:-sqlite:///$PWD/mlruns.db}"
    ARTIFACTS="${ARTIFACTS:-$PWD/mlartifacts}"
    if [[ "$BACKEND" == sqlite:///* ]]; then
        local db="${BACKEND#sqlite:///}"
        case "$db" in /*) ;; *) db="$PWD/$db" ;; esac
        BACKEND="sqlite:///$db"
        ((DRY)) || mkdir -p "$(dirname "$db")"
    elif ((LOCAL_PG == 0)) && [[ "$BACKEND" != *://* ]]; then
        die "--backend must be a database URI (sqlite:///PATH, postgresql://USER@HOST/DB, ...)"
    fi
    if [[ "$ARTIFACTS" != *://* ]]; then
        case "$ARTIFACTS" in /*) ;; *) ARTIFACTS="$PWD/$ARTIFACTS" ;; esac
        ((DRY)) || mkdir -p "$ARTIFACTS"
    fi

    local args=(mlflow server --host "$HOST" --port "$PORT" --workers "$WORKERS"
                --serve-artifacts --artifacts-destination "$ARTIFACTS" ${EXTRA[@]+"${EXTRA[@]}"})
    local shown; shown="$(mask "$BACKEND")"
    ((LOCAL_PG)) && shown="postgresql+psycopg://mlflow@127.0.0.1:PORT/mlflow (a local PostgreSQL in $PG_DIR, password in $PG_DIR/pgpass)"
    if ((DRY)); then
        ((LOCAL_PG)) && echo "would start a local PostgreSQL: $("${TOOL[@]}" pg-bin ${PG_BIN_ARG[@]+"${PG_BIN_ARG[@]}"})/pg_ctl, data in $PG_DIR/data, 127.0.0.1 only"
        echo "would run: MLFLOW_BACKEND_STORE_URI='$shown' ${args[*]}"
        echo "tracking URI: $URL"
        return 0
    fi
    [[ -n "$("${TOOL[@]}" free-ports 1 --start "$PORT" | grep -x "$PORT")" ]] \
        || die "port $PORT is taken by another process: choose --port"
    # the database driver the URI names (SQLAlchemy 2.1 reads postgresql:// as psycopg 3), importable
    # by mlflow's python: fail now, not in the server's log (the URI goes by env: it may hold a password)
    if ((LOCAL_PG)) || [[ "$BACKEND" != sqlite:* ]]; then
        local probe="${BACKEND:-postgresql+psycopg://x@127.0.0.1/x}" why
        why="$(HARMONIA_PROBE_URI="$probe" "$PY" -c 'import os
from sqlalchemy.engine import make_url
make_url(os.environ["HARMONIA_PROBE_URI"]).get_dialect().import_dbapi()' 2>&1 | tail -n 1)" \
            || die "the backend $shown needs a database driver that mlflow's python ($PY) lacks ($why):
  PostgreSQL: pip install 'harmonia[postgres]' (psycopg 3, for postgresql:// and postgresql+psycopg://),
  or pip install psycopg2-binary and write postgresql+psycopg2://"
    fi

    mkdir -p "$RUN_DIR"; chmod 700 "$RUN_DIR"
    local pgpass=""
    if ((LOCAL_PG)); then
        # as root PostgreSQL runs as another user, who must be able to enter RUN_DIR to reach PG_DIR
        # (711: enter, not list; the files here are 600)
        [[ "$EUID" -ne 0 || "$PG_DIR" != "$RUN_DIR"/* ]] || chmod 711 "$RUN_DIR"
        local pg_out
        pg_out="$("${TOOL[@]}" pg-up --dir "$PG_DIR" ${PG_BIN_ARG[@]+"${PG_BIN_ARG[@]}"})" || die "the local PostgreSQL did not start"
        echo "$PG_DIR" >"$PG_MARK"
        BACKEND="$(sed -n 's/^PG_URI=//p' <<<"$pg_out")"
        pgpass="$(sed -n 's/^PGPASSFILE=//p' <<<"$pg_out")"
        shown="$(mask "$BACKEND") (local PostgreSQL, pid $(sed -n 's/^PG_PID=//p' <<<"$pg_out"), data in $PG_DIR/data, password in $pgpass)"
    fi
    case "$HOST" in
        127.*|localhost|::1) ;;
        *) echo "WARNING: binding to $HOST: MLflow has no authentication by default; anyone who" >&2
           echo "         reaches this port can read and change runs. Prefer 127.0.0.1 + an SSH tunnel," >&2
           echo "         and set --allowed-hosts (pass after --) when serving other hosts." >&2 ;;
    esac
    # setsid: own process group (stop ends exactly it); the backend URI goes by env only
    (umask 077; : >"$LOG_FILE")
    if [[ -n "$pgpass" ]]; then
        PGPASSFILE="$pgpass" MLFLOW_BACKEND_STORE_URI="$BACKEND" MLFLOW_SERVER_ENABLE_JOB_EXECUTION="$JOBS" setsid "${args[@]}" >"$LOG_FILE" 2>&1 </dev/null &
    else
        MLFLOW_BACKEND_STORE_URI="$BACKEND" MLFLOW_SERVER_ENABLE_JOB_EXECUTION="$JOBS" setsid "${args[@]}" >"$LOG_FILE" 2>&1 </dev/null &
    fi
    pid=$!
    echo "$pid" >"$PID_FILE"

    echo "MLflow tracking server starting (pid $pid)"
    echo "  backend:      $shown"
    echo "  artifacts:    $ARTIFACTS (served by the server; clients use mlflow-artifacts:/ URIs)"
    echo "  bound to:     $HOST:$PORT"
    echo "  log:          $LOG_FILE   pid file: $PID_FILE"
    echo "  stop:         $0 stop --port $PORT$([[ "$RUN_DIR" == "${TMPDIR:-/tmp}/harmonia-mlflow-$PORT" ]] || echo " --run-dir $RUN_DIR")$( ((LOCAL_PG)) && echo "   (add --purge to delete the local PostgreSQL's data too)")"
    if ((WAIT)); then
        local deadline=$((SECONDS + TIMEOUT))
        until "${TOOL[@]}" wait-http "$URL/health" --timeout 2; do
            if ! kill -0 "$pid" 2>/dev/null; then
                echo "---- the server exited; last lines of $LOG_FILE:" >&2
                tail -n 30 "$LOG_FILE" >&2
                rm -f "$PID_FILE"
                stop_local_pg >&2 || true
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
