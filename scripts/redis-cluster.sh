#!/usr/bin/env bash
# A local Redis Cluster for trying Herald against one: 3 masters and
# 3 replicas, each node a daemonized redis-server under .data/cluster/<port>/
# (its nodes.conf, redis.log, redis.pid), bound to 127.0.0.1, ports BASE..BASE+5
# (default 7001-7006; each node's cluster bus is its port + 10000). No
# persistence (appendonly no, save ""): the data goes with `stop`, the cluster's
# shape (nodes.conf) stays, and the next `start` brings the same cluster back.
#
# usage: scripts/redis-cluster.sh [start|stop|status|env]
#   start   (the default) start the six nodes (already running is fine), form the
#           cluster with `redis-cli --cluster create` the first time, and wait
#           until every node reports cluster_state:ok
#   stop    shut every node down (`redis-cli shutdown nosave`)
#   status  each node's pid, role and slots; exit 0 only if all six run and the
#           cluster is ok
#   env     print `export REDIS_CLUSTER_NODES=127.0.0.1:7001,...` (the three nodes
#           created as masters; any node serves as a seed):
#           eval "$(scripts/redis-cluster.sh env)"
#
# env: HERALD_CLUSTER_BASE_PORT (7001), HERALD_DATA_DIR (default <repo>/.data).
# A cluster that went wrong (say, a node's nodes.conf from another cluster):
# `stop`, then remove .data/cluster and `start` again.
# The tests do not use this: they start their own cluster on free ports
# (Tests/HeraldTestSupport/RedisCluster.swift).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${HERALD_DATA_DIR:-$ROOT/.data}
CLUSTER_DIR=$DATA/cluster
BASE_PORT=${HERALD_CLUSTER_BASE_PORT:-7001}
MASTERS=3
REPLICAS_PER_MASTER=1
NODE_COUNT=$((MASTERS * (1 + REPLICAS_PER_MASTER)))

say() { echo "redis-cluster: $*" >&2; }
die() { say "$*"; exit 1; }
# shellcheck source=scripts/lib/processes.sh
source "$ROOT/scripts/lib/processes.sh" # alive, listening

[[ $BASE_PORT =~ ^[0-9]+$ ]] && ((BASE_PORT >= 1024 && BASE_PORT + NODE_COUNT - 1 + 10000 <= 65535)) ||
    die "HERALD_CLUSTER_BASE_PORT=$BASE_PORT: needs a number from 1024 to $((65535 - 10000 - NODE_COUNT + 1)) (each node's cluster bus is its port + 10000)"

PORTS=()
for ((i = 0; i < NODE_COUNT; i++)); do PORTS+=($((BASE_PORT + i))); done
SEEDS=$(for ((i = 0; i < MASTERS; i++)); do printf '127.0.0.1:%s\n' "${PORTS[i]}"; done | paste -sd, -)
RANGE="127.0.0.1:${PORTS[0]}-${PORTS[NODE_COUNT - 1]}"

cli() { # PORT ARGS...: redis-cli against one node, at most 5 s
    local port=$1
    shift
    timeout 5 redis-cli -h 127.0.0.1 -p "$port" "$@"
}
node_dir() { echo "$CLUSTER_DIR/$1"; }
node_pid() { # PORT: pid of our redis-server for that port, if it runs
    local pid file
    file=$(node_dir "$1")/redis.pid
    [[ -f $file ]] || return 1
    pid=$(<"$file")
    alive "$pid" && echo "$pid"
}
node_is() { # PORT PID: the redis-server answering on PORT has pid PID
    [[ $(cli "$1" info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p') == "$2" ]]
}
info_field() { # PORT FIELD: a field of CLUSTER INFO
    cli "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"
}

need_redis() {
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        say "redis-server/redis-cli missing: installing Herald's Debian packages (scripts/install-deps.sh)"
        bash "$ROOT/scripts/install-deps.sh"
        command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
            die "redis-server or redis-cli still not found after scripts/install-deps.sh"
    fi
}

node_start() { # PORT
    local port=$1 dir
    dir=$(node_dir "$port")
    node_pid "$port" >/dev/null && return 0
    listening "$port" && die "port $port is already in use by something else; set HERALD_CLUSTER_BASE_PORT"
    listening $((port + 10000)) &&
        die "port $((port + 10000)) (the cluster bus of $port) is already in use; set HERALD_CLUSTER_BASE_PORT"
    mkdir -p "$dir"
    rm -f "$dir/redis.pid"
    redis-server --bind 127.0.0.1 --port "$port" --protected-mode yes --dir "$dir" \
        --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
        --appendonly no --save "" --repl-diskless-sync-delay 0 \
        --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" ||
        die "redis-server on port $port failed to start; see $dir/redis.log"
}

node_wait() { # PORT: until our node answers on PORT (at most 20 s)
    local port=$1 pid i
    for ((i = 0; i < 100; i++)); do
        pid=$(node_pid "$port") && node_is "$port" "$pid" && return 0
        sleep 0.2
    done
    tail -n 20 "$(node_dir "$port")/redis.log" >&2 2>/dev/null || true
    die "the node on 127.0.0.1:$port did not answer within 20 s; see $(node_dir "$port")/redis.log"
}

form() { # runs `redis-cli --cluster create` if the nodes are not a cluster yet
    local port known assigned fresh=0 formed=0 odd=()
    for port in "${PORTS[@]}"; do
        known=$(info_field "$port" cluster_known_nodes)
        assigned=$(info_field "$port" cluster_slots_assigned)
        if [[ $known == 1 && $assigned == 0 ]]; then
            fresh=$((fresh + 1))
        elif [[ $known == "$NODE_COUNT" && $assigned == 16384 ]]; then
            formed=$((formed + 1))
        else
            odd+=("127.0.0.1:$port (knows $known nodes, $assigned slots assigned)")
        fi
    done
    ((formed == NODE_COUNT)) && return 0
    ((fresh == NODE_COUNT)) ||
        die "the nodes are neither a fresh nor a formed $NODE_COUNT-node cluster (${odd[*]:-$fresh fresh, $formed formed}); to start over: scripts/redis-cluster.sh stop && rm -rf $CLUSTER_DIR"
    local nodes=() log=$CLUSTER_DIR/create.log
    for port in "${PORTS[@]}"; do nodes+=("127.0.0.1:$port"); done
    say "forming the cluster: $MASTERS masters, $REPLICAS_PER_MASTER replica(s) each"
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas "$REPLICAS_PER_MASTER" --cluster-yes >"$log" 2>&1 || {
        cat "$log" >&2
        die "redis-cli --cluster create failed (log: $log)"
    }
}

wait_ok() { # until every node reports cluster_state:ok (at most 30 s)
    local port i bad
    for ((i = 0; i < 150; i++)); do
        bad=
        for port in "${PORTS[@]}"; do
            [[ $(info_field "$port" cluster_state) == ok ]] || { bad=$port; break; }
        done
        [[ -z $bad ]] && return 0
        sleep 0.2
    done
    cli "$bad" cluster info >&2 2>/dev/null || true
    die "127.0.0.1:$bad does not report cluster_state:ok after 30 s; see $(node_dir "$bad")/redis.log"
}

cluster_start() {
    need_redis
    local port running=0 started
    started=$(date +%s%N)
    for port in "${PORTS[@]}"; do node_pid "$port" >/dev/null && running=$((running + 1)); done
    for port in "${PORTS[@]}"; do node_start "$port"; done
    for port in "${PORTS[@]}"; do node_wait "$port"; done
    form
    wait_ok
    if ((running == NODE_COUNT)); then
        say "cluster already running on $RANGE (data $CLUSTER_DIR)"
    else
        say "cluster ready on $RANGE after $((($(date +%s%N) - started) / 1000000)) ms (data $CLUSTER_DIR)"
    fi
}

node_stop() { # PORT
    local port=$1 pid i
    pid=$(node_pid "$port") || return 0
    # Only our own server: the one whose pid file names the process that answers.
    if node_is "$port" "$pid"; then
        cli "$port" shutdown nosave >/dev/null 2>&1 || true
    else
        kill -TERM "$pid" 2>/dev/null || true
    fi
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    die "the node on 127.0.0.1:$port (pid $pid) did not stop within 10 s"
}

cluster_stop() {
    local port stopped=0
    for port in "${PORTS[@]}"; do
        node_pid "$port" >/dev/null || continue
        node_stop "$port"
        stopped=$((stopped + 1))
    done
    if ((stopped)); then
        say "stopped $stopped node(s) of $RANGE (cluster config kept in $CLUSTER_DIR)"
    else
        say "cluster not running"
    fi
}

cluster_status() {
    local port pid ok=0 role state
    for port in "${PORTS[@]}"; do
        if ! pid=$(node_pid "$port"); then
            echo "127.0.0.1:$port  stopped"
            ok=3
            continue
        fi
        if ! node_is "$port" "$pid"; then
            echo "127.0.0.1:$port  running (pid $pid) but not answering"
            ok=3
            continue
        fi
        # This node's line of CLUSTER NODES: "master" with its slots, or "replica of <master's address>".
        role=$(cli "$port" cluster nodes 2>/dev/null | tr -d '\r' | awk '
            { address[$1] = $2; sub(/@.*/, "", address[$1]) }
            $3 ~ /^myself,/ {
                if ($4 == "-") { mine = "master"; for (i = 9; i <= NF; i++) mine = mine (i == 9 ? "  slots " : " ") $i }
                else master = $4
            }
            END { print (mine != "" ? mine : "replica of " (master in address ? address[master] : master)) }' || true)
        state=$(info_field "$port" cluster_state)
        [[ $state == ok ]] || ok=3
        echo "127.0.0.1:$port  running (pid $pid)  cluster_state:$state  $role"
    done
    exit "$ok"
}

case ${1:-start} in
start) cluster_start ;;
stop) cluster_stop ;;
status) cluster_status ;;
env) echo "export REDIS_CLUSTER_NODES=$SEEDS" ;;
*)
    echo "usage: $0 [start|stop|status|env]" >&2
    exit 2
    ;;
esac
