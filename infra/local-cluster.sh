#!/usr/bin/env bash
# A multi-node Ray cluster on this machine, for trying `harmonia search --address` and
# for tests: one head node and N worker nodes, each a separate `ray start` with its own
# temp dir and ports, all joined to the head on 127.0.0.1.
#
#   infra/local-cluster.sh up     [--workers N] [--port P] [--cpus-per-node C] [--auth token|disabled]
#                                 [--host H] [--object-store-mb M] [--dir D]
#   infra/local-cluster.sh status [--port P] [--dir D]
#   infra/local-cluster.sh down   [--port P] [--dir D] [--keep-logs]
#
# Defaults: --workers 1 --port 6390 --cpus-per-node 1 --auth token --host 127.0.0.1
#           --dir ${HARMONIA_RAY_DIR:-/tmp/harmonia-ray-P}
#           --object-store-mb: Ray's default budget (30% of RAM) split among the nodes
#
# Auth: Ray >= 2.59 turns token auth on by default, and every node, the driver and
# `ray status` must agree. `--auth token` (default) generates a token file under the
# cluster dir and hands the head's token to every worker node (RAY_AUTH_TOKEN_PATH);
# `--auth disabled` (loopback only) sets RAY_AUTH_MODE=disabled everywhere.
# The env the driver needs is printed and written to D/driver.env.
#
# Listening: every node's servers (GCS, raylets, object managers, agents, the Ray Client
# server, workers) listen on --host only: 127.0.0.1 by default. Another address (one that
# other machines reach) must be given explicitly, and needs --auth token.
#
# `down` stops only the processes of this cluster (found by its temp dir and GCS port),
# never all Ray processes on the host like `ray stop` would: another Ray, for example one
# on the default port 6379, is left running.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
die() { echo "local-cluster.sh: $*" >&2; exit 1; }

# --- find ray and a python: the active env first, else the repo's .venv
if ! command -v ray >/dev/null 2>&1 && [[ -x "$REPO/.venv/bin/ray" ]]; then
    export PATH="$REPO/.venv/bin:$PATH"
fi
command -v ray >/dev/null 2>&1 || die "'ray' not found: activate the venv (pip install 'ray[tune]')"
PY="${PYTHON:-$(dirname "$(command -v ray)")/python}"
[[ -x "$PY" ]] || PY="$(command -v python3)"
TOOL=("$PY" "$HERE/infra_tool.py")

CMD="${1:-}"; [[ $# -gt 0 ]] && shift
WORKERS=1; PORT=6390; CPUS=1; AUTH=token; HOST=127.0.0.1; DIR=""; KEEP_LOGS=0; STORE_MB=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --workers) WORKERS="$2"; shift 2 ;;
        --workers=*) WORKERS="${1#*=}"; shift ;;
        --port) PORT="$2"; shift 2 ;;
        --port=*) PORT="${1#*=}"; shift ;;
        --cpus-per-node) CPUS="$2"; shift 2 ;;
        --cpus-per-node=*) CPUS="${1#*=}"; shift ;;
        --auth) AUTH="$2"; shift 2 ;;
        --auth=*) AUTH="${1#*=}"; shift ;;
        --host) HOST="$2"; shift 2 ;;
        --host=*) HOST="${1#*=}"; shift ;;
        --object-store-mb) STORE_MB="$2"; shift 2 ;;
        --object-store-mb=*) STORE_MB="${1#*=}"; shift ;;
        --dir) DIR="$2"; shift 2 ;;
        --dir=*) DIR="${1#*=}"; shift ;;
        --keep-logs) KEEP_LOGS=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ "$WORKERS" =~ ^[0-9]+$ ]] || die "--workers must be a whole number"
[[ "$PORT" =~ ^[0-9]+$ ]] || die "--port must be a number"
[[ "$CPUS" =~ ^[0-9]+$ ]] || die "--cpus-per-node must be a whole number"
[[ -z "$STORE_MB" || "$STORE_MB" =~ ^[0-9]+$ ]] || die "--object-store-mb must be a whole number"
[[ "$AUTH" == disabled || "$AUTH" == token ]] || die "--auth is 'token' or 'disabled'"
[[ "$HOST" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || die "--host must be an IPv4 address (default 127.0.0.1), not '$HOST'"
[[ "$AUTH" == token || "$HOST" == 127.* || "$CMD" != up ]] \
    || die "--auth disabled listens unauthenticated: only with a loopback --host (127.0.0.1), not $HOST"
DIR="${DIR:-${HARMONIA_RAY_DIR:-${TMPDIR:-/tmp}/harmonia-ray-$PORT}}"
case "$DIR" in /*) ;; *) DIR="$PWD/$DIR" ;; esac
DIR="${DIR%/}"
# Auth mode and host of a running cluster come from its state file, not from the flags.
if [[ "$CMD" != up && -f "$DIR/cluster.env" ]]; then
    AUTH="$(sed -n 's/^AUTH=//p' "$DIR/cluster.env")"
    HOST="$(sed -n 's/^HOST=//p' "$DIR/cluster.env")"; HOST="${HOST:-127.0.0.1}"
fi
ADDRESS="$HOST:$PORT"
LOOPBACK=0; [[ "$HOST" == 127.* ]] && LOOPBACK=1

set_auth_env() {
    unset RAY_ADDRESS RAY_AUTH_TOKEN
    export RAY_USAGE_STATS_ENABLED=0
    export RAY_AUTH_MODE="$AUTH"
    if [[ "$AUTH" == token ]]; then
        export RAY_AUTH_TOKEN_PATH="$DIR/auth_token"
    else
        unset RAY_AUTH_TOKEN_PATH
    fi
    # a driver (and `ray status`) keeps the loopback address of the GCS instead of the outward one
    if ((LOOPBACK)); then export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0; else unset RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER; fi
}

running_pids() { "${TOOL[@]}" find-ray --port "$PORT" --dir "$DIR"; }

cmd_status() {
    local procs nodes
    procs="$(running_pids)"
    if [[ -z "$procs" ]]; then
        echo "no local Ray cluster on port $PORT (dir $DIR)"
        return 3
    fi
    nodes="$(grep -c ' raylet$' <<<"$procs" || true)"
    echo "local Ray cluster on $ADDRESS: $nodes node(s) running (raylets), auth=$AUTH, dir $DIR"
    [[ -f "$DIR/driver.env" ]] && echo "driver env: source $DIR/driver.env"
    set_auth_env
    ray status --address "$ADDRESS" 2>&1 | sed 's/^/  /' || true
}

cmd_down() {
    local procs
    procs="$(running_pids)"
    if [[ -z "$procs" ]]; then
        echo "nothing to stop on port $PORT (dir $DIR)"
    else
        echo "stopping $(wc -l <<<"$procs") process(es) of the Ray cluster on $ADDRESS ..."
        "${TOOL[@]}" kill-ray --port "$PORT" --dir "$DIR" --grace 10
    fi
    procs="$(running_pids)"
    [[ -z "$procs" ]] || { echo "still running:"; echo "$procs"; return 1; }
    if [[ "$KEEP_LOGS" == 0 ]]; then
        # only what `up` created (never `rm -rf` a --dir the user named); the object-store
        # files in /dev/shm belong to the raylets and went with them
        if [[ -d "$DIR" ]]; then
            rm -rf "$DIR"/n[0-9]* "$DIR/driver.env" "$DIR/cluster.env" "$DIR/auth_token"
            rmdir "$DIR" 2>/dev/null || true
        fi
    else
        echo "logs kept under $DIR"
    fi
    echo "Ray cluster on $ADDRESS is down"
}

start_node() {  # start_node INDEX ARGS... ; logs to $DIR/nINDEX.start.log
    local i="$1"; shift
    # Ray 2.60 replaces a loopback node address (--node-ip-address, the host of --address) with
    # the host's outward one, and its servers then listen on every interface: on loopback, start
    # the node through infra_tool.py, which keeps 127.0.0.1.
    local start=(ray start)
    ((LOOPBACK)) && start=("${TOOL[@]}" ray-start-loopback)
    if ! "${start[@]}" "$@" >"$DIR/n$i.start.log" 2>&1; then
        echo "---- ray start failed for node $i; last lines of $DIR/n$i.start.log:" >&2
        tail -n 30 "$DIR/n$i.start.log" >&2
        return 1
    fi
}

cmd_up() {
    if [[ -n "$(running_pids)" ]]; then
        echo "a cluster is already running on port $PORT (dir $DIR):"
        cmd_status || true
        die "run '$0 down --port $PORT' first"
    fi
    [[ -n "$("${TOOL[@]}" free-ports 1 --start "$PORT" | grep -x "$PORT")" ]] \
        || die "port $PORT is taken by another process: choose --port"
    mkdir -p "$DIR" && chmod 700 "$DIR"
    rm -rf "$DIR"/n[0-9]* "$DIR/driver.env" "$DIR/cluster.env"

    if [[ "$AUTH" == token ]]; then
        if [[ ! -s "$DIR/auth_token" ]]; then
            (umask 077; "$PY" -c 'import secrets; print(secrets.token_hex(32), end="")' >"$DIR/auth_token")
        fi
        chmod 600 "$DIR/auth_token"
    else
        echo "NOTE: RAY_AUTH_MODE=disabled: any local user can drive this cluster (it listens on $HOST only)."
    fi
    set_auth_env
    {
        echo "# source this in the shell that runs the driver (ray.init / harmonia search)"
        echo "export RAY_AUTH_MODE=$AUTH"
        [[ "$AUTH" == token ]] && echo "export RAY_AUTH_TOKEN_PATH=$DIR/auth_token"
        if ((LOOPBACK)); then
            echo "# keeps the GCS address 127.0.0.1 (Ray 2.60 would replace it with this host's outward address)"
            echo "export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0"
        fi
        echo "# address: $ADDRESS"
    } >"$DIR/driver.env"
    printf 'PORT=%s\nWORKERS=%s\nCPUS=%s\nAUTH=%s\nHOST=%s\n' "$PORT" "$WORKERS" "$CPUS" "$AUTH" "$HOST" >"$DIR/cluster.env"

    # Ports: every node of one host needs its own raylet/object manager/agent ports and a
    # worker port range of its own; the head also gets its own dashboard and client-server
    # ports so that it never collides with another Ray on the default ports (6379, 8265,
    # 10001, 52365). All are checked free now.
    local nodes=$((WORKERS + 1)) per_node=6 span=$((CPUS > 2 ? CPUS * 50 : 100))
    local ports; read -r -a ports <<<"$("${TOOL[@]}" free-ports $((nodes * per_node + 2)))"
    local dash_port="${ports[-1]}" client_port="${ports[-2]}"
    # worker port ranges start at a base picked by the GCS port, under the ephemeral range
    local cursor=$((20000 + (PORT % 6) * 2000))
    # each node would take 30% of RAM for its object store: share that budget instead
    if [[ -z "$STORE_MB" ]]; then
        local mem_kb; mem_kb="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
        STORE_MB=$((mem_kb * 3 / 10 / 1024 / nodes))
        ((STORE_MB >= 256)) || STORE_MB=256
    fi

    local i args common lo hi
    for ((i = 0; i < nodes; i++)); do
        local p=("${ports[@]:$((i * per_node)):$per_node}")
        lo="$("${TOOL[@]}" free-range "$span" "$cursor")"; hi=$((lo + span - 1)); cursor=$((hi + 1))
        common=(--num-cpus="$CPUS" --temp-dir="$DIR/n$i" --disable-usage-stats
                --node-manager-port="${p[0]}" --object-manager-port="${p[1]}"
                --dashboard-agent-listen-port="${p[2]}" --dashboard-agent-grpc-port="${p[3]}"
                --runtime-env-agent-port="${p[4]}" --metrics-export-port="${p[5]}"
                --min-worker-port="$lo" --max-worker-port="$hi" --log-style=record
                --object-store-memory=$((STORE_MB * 1024 * 1024)))
        if ((i == 0)); then
            args=(--head --port="$PORT" --node-ip-address="$HOST" --dashboard-host=127.0.0.1
                  --dashboard-port="$dash_port" "${common[@]}")
            # the Ray Client server (ray://) exists only with ray[client]/ray[default]
            if "$PY" -c 'import grpc' 2>/dev/null; then
                args+=(--ray-client-server-port="$client_port")
            else
                client_port=""
            fi
            echo "starting head node on $ADDRESS ..."
        else
            args=(--address="$ADDRESS" --node-ip-address="$HOST" "${common[@]}")
            echo "starting worker node $i ..."
        fi
        if ! start_node "$i" "${args[@]}"; then
            echo "cleaning up the nodes started so far" >&2
            KEEP_LOGS=1 cmd_down >&2 || true
            exit 1
        fi
    done

    # wait until every node is registered
    local alive=0 t
    for t in $(seq 1 60); do
        alive="$("${TOOL[@]}" alive-nodes "$ADDRESS" 2>/dev/null || echo 0)"
        [[ "$alive" -ge "$nodes" ]] && break
        sleep 0.5
    done
    [[ "$alive" -ge "$nodes" ]] || echo "WARNING: only $alive of $nodes nodes registered so far" >&2

    local dashboard="not served (the dashboard needs 'ray[default]'; this env has the minimal install)"
    if "$PY" -c 'import aiohttp_cors, grpc' 2>/dev/null; then
        if "${TOOL[@]}" wait-http "http://127.0.0.1:$dash_port/api/version" --timeout 15 --any-status; then
            dashboard="http://127.0.0.1:$dash_port (bound to 127.0.0.1 only)"
        else
            dashboard="http://127.0.0.1:$dash_port (not answering yet; see $DIR/n0/session_latest/logs/dashboard.log)"
        fi
    fi
    cat <<EOF

Ray cluster up: 1 head + $WORKERS worker node(s), $CPUS CPU(s) and ${STORE_MB} MB object store each, auth=$AUTH
  address:    $ADDRESS
  driver env: $(grep '^export' "$DIR/driver.env" | paste -sd ';' - | sed 's/;/; /g')
              (or: source $DIR/driver.env)
  use it:     ray.init(address="$ADDRESS")   |   harmonia search CONFIG --address $ADDRESS
  dashboard:  $dashboard
  ray client: $([[ -n "$client_port" ]] && echo "ray://$HOST:$client_port" || echo "not served (needs 'ray[client]')")
  logs:       $DIR/n*/session_latest/logs
  stop:       $0 down --port $PORT$([[ "$DIR" == "${TMPDIR:-/tmp}/harmonia-ray-$PORT" ]] || echo " --dir $DIR")
EOF
    grep '^export' "$DIR/driver.env"
}

case "$CMD" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
esac
