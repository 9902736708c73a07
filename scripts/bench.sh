#!/usr/bin/env bash
# The benchmarks of docs/benchmarks.md, end to end on this machine, loopback only:
#   1. Redis and PostgreSQL through scripts/services.sh (127.0.0.1:6390 and :5440, data under .data/);
#      if they were not running before, they are stopped again at the end
#   2. release build of `herald` and `herald-load`
#   3. `herald migrate`, `herald demo-agent` on 127.0.0.1:$BENCH_AGENT_PORT and a release
#      `herald serve` on 127.0.0.1:$BENCH_PORT with HERALD_RUN_TIMEOUT_SECONDS=86400 (the load
#      tool's run stays open), HERALD_LOG_LEVEL=warning, fresh random HERALD_JWT_SECRET and
#      HERALD_WEBHOOK_SECRET, and per-user limits (streams, sends) lifted for the one load user
#   4. every scenario $RUNS times (herald-load against that server), then a table of medians;
#      the connections-only scenarios get a freshly started server for every run (RSS only grows)
#   5. stops the server and the demo agent (and the services if it started them)
# Everything it writes goes to $BENCH_OUT (default .data/bench-<date>): each run's output,
# results.txt (the RESULT lines), medians.txt, machine.txt, the server's log.
#
# With BENCH_NCHAN=1 it runs the vs-* scenarios instead, each against Herald and against a local Nchan
# (nginx + libnginx-mod-nchan from Debian, installed if missing; Redis-backed like Herald, on
# 127.0.0.1:$BENCH_NCHAN_PORT, config in $BENCH_OUT/nchan/) with the same herald-load (plain pub/sub
# mode for Nchan), and prints Herald/Nchan ratios per figure (ratios.txt).
#
# With BENCH_REDIS_CLUSTER=1 Herald runs on the local Redis Cluster of scripts/redis-cluster.sh (3 masters and 3
# replicas on 127.0.0.1:7001-7006, started and, if it was not running, stopped again) instead of the single
# Redis; the redis-s column is then empty (the cluster is six processes).
#
# env (all optional): RUNS (3), BENCH_SCENARIOS (names, space-separated; default all, in the
# order below), BENCH_NCHAN (0), BENCH_NCHAN_PORT (18180), BENCH_REDIS_CLUSTER (0), BENCH_PORT (18080), BENCH_AGENT_PORT (18090), BENCH_SKIP_BUILD=1 (use the
# binaries already built), BENCH_HERALD_WRAPPER (a profiler command to run `herald serve` under), BENCH_SCRATCH_PATH (SwiftPM scratch path, default .build),
# BENCH_OUT, and what scripts/services.sh reads (REDIS_PORT, PG_PORT, HERALD_DATA_DIR).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

say() { echo "bench: $*" >&2; }
die() { say "$*"; exit 1; }
# shellcheck source=scripts/lib/processes.sh
source "$ROOT/scripts/lib/processes.sh"

RUNS=${RUNS:-3}
BENCH_PORT=${BENCH_PORT:-18080}
BENCH_AGENT_PORT=${BENCH_AGENT_PORT:-18090}
SCRATCH=${BENCH_SCRATCH_PATH:-$ROOT/.build}
DATA=${HERALD_DATA_DIR:-$ROOT/.data}
OUT=${BENCH_OUT:-$DATA/bench-$(date +%Y%m%d-%H%M%S)}
[[ $RUNS =~ ^[1-9][0-9]?$ ]] || die "RUNS must be 1-99"

# name | herald-load arguments. Webhooks are signed (Standard Webhooks) unless the scenario says
# otherwise; webhooks-max-token authenticates with the run's callback token instead. The fanout-*
# trio posts the same webhooks at the same rate to 1, 100 and 1000 subscribers: what fan-out itself
# costs; fanout-1000-4k repeats the 1000 with 4000-byte deltas (a per-subscriber encoding would
# show up there). fanout-max-1000 finds the ceiling (1000 webhooks: each stream's backlog stays
# under the 1024-frame slow-consumer bound). The *-ws rows repeat theirs with WebSocket subscribers (GET /ws,
# one thread per socket) instead of SSE streams.
SCENARIOS=(
    "webhooks-max|--subscribers 1 --webhooks 5000 --concurrency 16 --rate 0"
    "webhooks-max-token|--subscribers 1 --webhooks 5000 --concurrency 16 --rate 0 --webhook-auth token --agent-url http://127.0.0.1:$BENCH_AGENT_PORT"
    "fanout-1|--subscribers 1 --webhooks 500 --rate 25"
    "fanout-100|--subscribers 100 --webhooks 500 --rate 25"
    "fanout-1000|--subscribers 1000 --webhooks 500 --rate 25"
    "fanout-1000-4k|--subscribers 1000 --webhooks 500 --rate 25 --payload-bytes 4000"
    "fanout-max-1000|--subscribers 1000 --webhooks 1000 --concurrency 8 --rate 0"
    "fanout-1000-ws|--subscribers 1000 --webhooks 500 --rate 25 --web-socket"
    "fanout-max-1000-ws|--subscribers 1000 --webhooks 1000 --concurrency 8 --rate 0 --web-socket"
    "connections-1000|--connections-only --subscribers 1000"
    "connections-5000|--connections-only --subscribers 5000"
    "connections-5000-ws|--connections-only --subscribers 5000 --web-socket"
    "threads-1000|--threads 1000 --subscribers 5000 --webhooks 10 --concurrency 16 --rate 0 --connect-batch 200"
)
WARMUP="--subscribers 10 --webhooks 1000 --concurrency 8 --rate 0"

# Herald side by side with Nchan (BENCH_NCHAN=1): the same herald-load arguments against both. publish:
# one stream, 5 000 publishes (signed delta webhooks for Herald) from 16 connections as fast as they go;
# burst: one channel, 5 000 streams, 50 frames as fast as they go; paced: 2 000 streams at 20 frames/s
# (40 000 deliveries/s); threads: 1 000 threads (channels) × 5 streams, 10 publishes to each, as fast as
# 16 connections go; idle: 15 000 open streams (RSS per stream); connect: time to open 5 000 streams.
VS_SCENARIOS=(
    "vs-publish|--subscribers 1 --webhooks 5000 --concurrency 16 --rate 0"
    "vs-threads-1000|--threads 1000 --subscribers 5000 --webhooks 10 --concurrency 16 --rate 0 --connect-batch 200"
    "vs-burst-5000|--subscribers 5000 --webhooks 50 --concurrency 1 --rate 0 --connect-batch 200"
    "vs-paced-2000|--subscribers 2000 --webhooks 200 --rate 20 --connect-batch 200"
    "vs-idle-15000|--connections-only --subscribers 15000 --connect-batch 200"
    "vs-connect-5000|--connections-only --subscribers 5000 --hold-seconds 0 --connect-batch 200"
)
BENCH_NCHAN=${BENCH_NCHAN:-0}
BENCH_NCHAN_PORT=${BENCH_NCHAN_PORT:-18180}
((BENCH_NCHAN == 1)) && SCENARIOS=("${VS_SCENARIOS[@]}")

selected=()
for entry in "${SCENARIOS[@]}"; do
    name=${entry%%|*}
    if [[ -z ${BENCH_SCENARIOS:-} || " $BENCH_SCENARIOS " == *" $name "* ]]; then
        selected+=("$entry")
    fi
done
((${#selected[@]})) || die "BENCH_SCENARIOS matches none of: $(printf '%s ' "${SCENARIOS[@]%%|*}")"

listening "$BENCH_PORT" && die "port $BENCH_PORT is in use; set BENCH_PORT"
listening "$BENCH_AGENT_PORT" && die "port $BENCH_AGENT_PORT is in use; set BENCH_AGENT_PORT"

bash "$ROOT/scripts/install-deps.sh"
if ((BENCH_NCHAN == 1)); then
    listening "$BENCH_NCHAN_PORT" && die "port $BENCH_NCHAN_PORT is in use; set BENCH_NCHAN_PORT"
    if [[ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]]; then
        say "installing nginx and Nchan (Debian: nginx-light, libnginx-mod-nchan)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light libnginx-mod-nchan >/dev/null ||
            die "apt-get install nginx-light libnginx-mod-nchan failed"
    fi
fi

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    say "release build of herald and herald-load (the first one takes several minutes)"
    swift build -c release --scratch-path "$SCRATCH" --product herald || die "swift build (herald) failed"
    swift build -c release --scratch-path "$SCRATCH" --product herald-load || die "swift build (herald-load) failed"
fi
BIN_DIR=$SCRATCH/release
HERALD=$BIN_DIR/herald
LOAD=$BIN_DIR/herald-load
[[ -x $HERALD && -x $LOAD ]] || die "no release binaries in $BIN_DIR (unset BENCH_SKIP_BUILD)"

mkdir -p "$OUT"
say "output in $OUT"

services_were_running=0
bash "$ROOT/scripts/services.sh" status >/dev/null 2>&1 && services_were_running=1
bash "$ROOT/scripts/services.sh" start
eval "$(bash "$ROOT/scripts/services.sh" env)" # REDIS_URL, DATABASE_URL
REDIS_PID=$(cat "$DATA/redis/redis.pid" 2>/dev/null || true)
PG_PID=$(head -n 1 "$DATA/postgres/postmaster.pid" 2>/dev/null || true)
cluster_was_running=1
CLUSTER_SEEDS=
if [[ ${BENCH_REDIS_CLUSTER:-0} == 1 ]]; then
    bash "$ROOT/scripts/redis-cluster.sh" status >/dev/null 2>&1 || cluster_was_running=0
    bash "$ROOT/scripts/redis-cluster.sh" start
    eval "$(bash "$ROOT/scripts/redis-cluster.sh" env)" # REDIS_CLUSTER_NODES
    CLUSTER_SEEDS=$REDIS_CLUSTER_NODES
    unset REDIS_CLUSTER_NODES # Herald takes the cluster from REDIS_URL; both set is refused
    REDIS_URL="redis+cluster://$CLUSTER_SEEDS"
    REDIS_PID=
fi

# Both ends hold thousands of sockets.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true

export REDIS_URL DATABASE_URL
export HERALD_HOST=127.0.0.1 HERALD_PORT=$BENCH_PORT
export AGENT_URL="http://127.0.0.1:$BENCH_AGENT_PORT" AGENT_KIND=langgraph AGENT_ASSISTANT_ID=agent
export PUBLIC_URL="http://127.0.0.1:$BENCH_PORT"
export HERALD_RUN_TIMEOUT_SECONDS=86400 HERALD_LOG_LEVEL=warning
HERALD_JWT_SECRET=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
HERALD_WEBHOOK_SECRET=whsec_$(head -c 32 /dev/urandom | base64 | tr -d '\n')
export HERALD_JWT_SECRET HERALD_WEBHOOK_SECRET # herald-load signs with the same secret
export HERALD_MAX_STREAMS_PER_USER=100000 HERALD_SENDS_PER_MINUTE=100000
HERALD_LOAD_TOKEN=$("$HERALD" token --user herald-load --ttl 1d) || die "herald token failed"
export HERALD_LOAD_TOKEN

"$HERALD" migrate >"$OUT/migrate.log" 2>&1 || { cat "$OUT/migrate.log" >&2; die "herald migrate failed"; }

AGENT_PID=
HERALD_PID=
NCHAN_PID=
# shellcheck disable=SC2317 # the EXIT trap
cleanup() {
    trap - EXIT INT TERM
    stop_pid "$HERALD_PID"
    stop_pid "$AGENT_PID"
    stop_pid "$NCHAN_PID"
    if ((services_were_running == 0)); then
        bash "$ROOT/scripts/services.sh" stop || true
    fi
    if ((cluster_was_running == 0)); then
        bash "$ROOT/scripts/redis-cluster.sh" stop || true
    fi
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


"$HERALD" demo-agent --host 127.0.0.1 --port "$BENCH_AGENT_PORT" >"$OUT/demo-agent.log" 2>&1 &
AGENT_PID=$!
wait_healthy "the demo agent" "$AGENT_URL/healthz" "$AGENT_PID" "$OUT/demo-agent.log"
start_herald() {
    # BENCH_HERALD_WRAPPER runs the server under a profiler, e.g. "heaptrack -o $OUT/heaptrack"
    # (RSS figures then include the profiler's own).
    ${BENCH_HERALD_WRAPPER:-} "$HERALD" serve >>"$OUT/herald.log" 2>&1 &
    HERALD_PID=$!
    wait_healthy "herald serve" "http://127.0.0.1:$BENCH_PORT/readyz" "$HERALD_PID" "$OUT/herald.log"
    say "herald serve (release) pid $HERALD_PID on 127.0.0.1:$BENCH_PORT, RSS $(awk '/VmRSS/ {print $2}' "/proc/$HERALD_PID/status") KiB"
}
start_herald

# Nchan as its users run it: nginx with one worker per core, subscribers on /sub/<channel>
# (EventSource), publishers on /pub/<channel>, channels in the same Redis as Herald's.
start_nchan() {
    local dir=$OUT/nchan
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<NGINX
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes $(nproc);
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile 40000;
events { worker_connections 20000; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    upstream redis_server { nchan_redis_server $REDIS_URL; }
    server {
        listen 127.0.0.1:$BENCH_NCHAN_PORT;
        location ~ ^/sub/(\w+)\$ { nchan_subscriber eventsource; nchan_channel_id \$1; nchan_redis_pass redis_server; }
        location ~ ^/pub/(\w+)\$ {
            nchan_publisher; nchan_channel_id \$1; nchan_redis_pass redis_server;
            nchan_message_buffer_length 1000; nchan_message_timeout 1h;
        }
    }
}
NGINX
    nginx -c "$dir/nginx.conf" -p "$dir" >>"$dir/stderr.log" 2>&1 &
    NCHAN_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        listening "$BENCH_NCHAN_PORT" && break
        kill -0 "$NCHAN_PID" 2>/dev/null || die "nginx (Nchan) exited; see $dir/error.log"
        sleep 0.1
    done
    listening "$BENCH_NCHAN_PORT" || die "nginx (Nchan) does not listen on $BENCH_NCHAN_PORT"
    say "nginx + Nchan pid $NCHAN_PID on 127.0.0.1:$BENCH_NCHAN_PORT"
}
((BENCH_NCHAN == 1)) && start_nchan

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' (working tree has changes)')"
    echo "cpu: $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "kernel: $(uname -r)"
    echo "swift: $(swift --version 2>/dev/null | head -n 1)"
    echo "redis: $(redis-server --version | head -n 1)${CLUSTER_SEEDS:+, cluster of 3 masters + 3 replicas ($CLUSTER_SEEDS)}"
    echo "postgres: $("$(compgen -G '/usr/lib/postgresql/*/bin/postgres' | sort -V | tail -n 1)" --version)"
    ((BENCH_NCHAN == 1)) && echo "nchan: $(nginx -v 2>&1), $(dpkg-query -W -f='libnginx-mod-nchan ${Version}' libnginx-mod-nchan 2>/dev/null)"
    echo "load average before: $(cut -d ' ' -f 1-3 /proc/loadavg)"
} | tee "$OUT/machine.txt" >&2

# load NAME RUN ARGS...: one herald-load run, bounded to 5 minutes; its RESULT line goes to results.txt.
load() {
    local name=$1 run=$2 rc=0 channel
    shift 2
    # shellcheck disable=SC2086 # the arguments are word lists
    if [[ $name == nchan-* ]]; then
        # A fresh channel for every run: Nchan hands a new subscriber the messages its channel still holds.
        channel=b$$x$RANDOM$RANDOM
        # shellcheck disable=SC2086
        timeout 300 "$LOAD" --url "http://127.0.0.1:$BENCH_NCHAN_PORT" --pid "$NCHAN_PID" --pid-tree \
            --subscribe-path "/sub/$channel" --publish-path "/pub/$channel" \
            ${REDIS_PID:+--redis-pid "$REDIS_PID"} --label "$name" "$@" >"$OUT/$name.$run.txt" 2>&1 || rc=$?
    else
        timeout 300 "$LOAD" --url "http://127.0.0.1:$BENCH_PORT" --pid "$HERALD_PID" \
            ${REDIS_PID:+--redis-pid "$REDIS_PID"} ${PG_PID:+--postgres-pid "$PG_PID"} --label "$name" "$@" \
            >"$OUT/$name.$run.txt" 2>&1 || rc=$?
    fi
    sed 's/^/    /' "$OUT/$name.$run.txt" >&2
    if grep -q '^RESULT ' "$OUT/$name.$run.txt"; then
        grep '^RESULT ' "$OUT/$name.$run.txt" | sed "s/\$/ run=$run exit=$rc/" >>"$OUT/results.txt"
    fi
    ((rc == 0)) || say "$name run $run: herald-load exited with $rc"
    kill -0 "$HERALD_PID" 2>/dev/null || die "herald serve died; see $OUT/herald.log"
    [[ -z $NCHAN_PID ]] || kill -0 "$NCHAN_PID" 2>/dev/null || die "nginx (Nchan) died; see $OUT/nchan/error.log"
    return 0
}

say "warm-up (not reported)"
# shellcheck disable=SC2086
load warmup 0 $WARMUP
: >"$OUT/results.txt"

for entry in "${selected[@]}"; do
    name=${entry%%|*}
    args=${entry#*|}
    for ((run = 1; run <= RUNS; run++)); do
        if [[ $args == *--connections-only* ]]; then
            stop_pid "$HERALD_PID"
            start_herald
        fi
        say "$name, run $run of $RUNS: herald-load $args"
        # shellcheck disable=SC2086
        load "$name" "$run" $args
        sleep 2 # let closed connections and the last frames settle
        if ((BENCH_NCHAN == 1)); then
            if [[ $args == *--connections-only* ]]; then
                stop_pid "$NCHAN_PID"
                start_nchan
            fi
            say "nchan-$name, run $run of $RUNS: herald-load $args (plain pub/sub)"
            # shellcheck disable=SC2086
            load "nchan-$name" "$run" $args
            sleep 2
        fi
    done
done

# Medians of each figure over the runs of a scenario.
median() { # KEY NAME
    grep "^RESULT label=$2 " "$OUT/results.txt" | grep -o " $1=[^ ]*" | cut -d= -f2 | grep -v '^-$' | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
worst() { # KEY NAME: the largest value over the runs (missing, duplicates: must be 0)
    grep "^RESULT label=$2 " "$OUT/results.txt" | grep -o " $1=[^ ]*" | cut -d= -f2 | sort -g | tail -n 1
}
{
    echo "medians of $RUNS runs ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
    echo "latency: publish (webhook sent) to receive (frame read by a subscriber), ms; lost: worst run's"
    echo "missing + duplicate + unexpected frames; cores: Herald's CPU seconds per second of the run;"
    echo "us/webhook, us/frame: Herald's CPU per accepted webhook and per delivered frame"
    printf '%-19s %9s %9s %7s %7s %7s %8s %5s %6s %10s %8s %8s %8s %8s\n' scenario webhooks/s frames/s p50 p90 p99 max lost cores us/webhook us/frame redis-s pg-s tool-s
    for entry in "${selected[@]}"; do
        name=${entry%%|*}
        [[ ${entry#*|} == *--connections-only* ]] && continue
        grep -q "^RESULT label=$name " "$OUT/results.txt" 2>/dev/null || continue
        loss=$(($(worst missing "$name") + $(worst duplicates "$name") + $(worst unexpected "$name")))
        printf '%-19s %9s %9s %7s %7s %7s %8s %5s %6s %10s %8s %8s %8s %8s\n' "$name" \
            "$(median webhooks_per_s "$name")" "$(median frames_per_s "$name")" \
            "$(median p50_ms "$name")" "$(median p90_ms "$name")" "$(median p99_ms "$name")" "$(median max_ms "$name")" \
            "$loss" "$(median herald_cores "$name")" "$(median herald_us_per_webhook "$name")" \
            "$(median herald_us_per_frame "$name")" "$(median redis_cpu_s "$name")" "$(median postgres_cpu_s "$name")" \
            "$(median tool_cpu_s "$name")"
    done
    echo
    printf '%-19s %11s %8s %13s %13s %10s %12s\n' scenario connections open-s rss-before-MiB rss-open-MiB KiB/conn closed-early
    for entry in "${selected[@]}"; do
        name=${entry%%|*}
        [[ ${entry#*|} == *--connections-only* ]] || continue
        grep -q "^RESULT label=$name " "$OUT/results.txt" 2>/dev/null || continue
        printf '%-19s %11s %8s %13s %13s %10s %12s\n' "$name" "$(median connections "$name")" "$(median open_s "$name")" \
            "$(awk -v k="$(median rss_before_kib "$name")" 'BEGIN { printf "%.1f", k / 1024 }')" \
            "$(awk -v k="$(median rss_open_kib "$name")" 'BEGIN { printf "%.1f", k / 1024 }')" \
            "$(median kib_per_connection "$name")" "$(worst closed_early "$name")"
    done
    if ((BENCH_NCHAN == 1)); then
        echo
        echo "Nchan, same scenarios (server: nginx master + workers)"
        for entry in "${selected[@]}"; do
            name=${entry%%|*}
            grep -q "^RESULT label=nchan-$name " "$OUT/results.txt" 2>/dev/null || continue
            echo "nchan-$name: frames/s $(median frames_per_s "nchan-$name"), p50 $(median p50_ms "nchan-$name"), p99 $(median p99_ms "nchan-$name"), us/frame $(median herald_us_per_frame "nchan-$name"), open-s $(median open_s "nchan-$name"), KiB/conn $(median kib_per_connection "nchan-$name")"
        done
    fi
    echo "herald serve RSS at the end: $(awk '/VmRSS/ {printf "%.1f MiB", $2 / 1024}' "/proc/$HERALD_PID/status")"
    echo "load average after: $(cut -d ' ' -f 1-3 /proc/loadavg)"
} | tee "$OUT/medians.txt"

# Herald / Nchan per figure, from the medians. CPU per delivered frame counts the servers and Redis
# (Herald also PostgreSQL): both hubs keep their channels there. Below 1 is Herald ahead for costs and
# latencies (and open-s); above 1 is Herald ahead for frames/s.
ratio() { # HERALD NCHAN
    awk -v h="$1" -v n="$2" 'BEGIN { if (h == "-" || n == "-" || n + 0 == 0) print "-"; else printf "%.2f", h / n }'
}
server_us_per_frame() { # NAME [COUNT_KEY]: (server + Redis + PostgreSQL CPU seconds) per delivered frame (or per COUNT_KEY), µs
    local cpu redis pg frames
    cpu=$(median herald_cpu_s "$1"); redis=$(median redis_cpu_s "$1"); pg=$(median postgres_cpu_s "$1"); frames=$(median "${2:-frames}" "$1")
    awk -v c="$cpu" -v r="$redis" -v p="$pg" -v f="$frames" 'BEGIN {
        if (c == "-" || f == "-" || f + 0 == 0) { print "-"; exit }
        printf "%.2f", (c + (r == "-" ? 0 : r) + (p == "-" ? 0 : p)) / f * 1e6 }'
}
server_us_per_open() { # NAME: the server's CPU while the streams opened, per stream, µs (Redis not counted)
    local cpu connections
    cpu=$(median herald_cpu_open_s "$1"); connections=$(median connections "$1")
    awk -v c="$cpu" -v n="$connections" 'BEGIN { if (c == "-" || n == "-" || n + 0 == 0) print "-"; else printf "%.1f", c / n * 1e6 }'
}
if ((BENCH_NCHAN == 1)); then
    {
        echo "Herald / Nchan, medians of $RUNS runs (< 1: Herald ahead, except frames/s: > 1)"
        printf '%-17s %-26s %10s %10s %7s
' scenario figure herald nchan ratio
        for entry in "${selected[@]}"; do
            name=${entry%%|*}
            if [[ ${entry#*|} == *--connections-only* ]]; then
                figures="open_s server_us_per_open kib_per_connection"
            elif [[ $name == vs-publish ]]; then
                figures="server_us_per_publish webhooks_per_s p50_ms p99_ms"
            elif [[ $name == vs-threads-* ]]; then
                figures="server_us_per_publish frames_per_s p50_ms p99_ms p999_ms"
            else
                figures="server_us_per_frame frames_per_s p50_ms p99_ms p999_ms"
            fi
            for figure in $figures; do
                if [[ $figure == server_us_per_frame ]]; then
                    h=$(server_us_per_frame "$name"); n=$(server_us_per_frame "nchan-$name")
                elif [[ $figure == server_us_per_publish ]]; then
                    h=$(server_us_per_frame "$name" accepted); n=$(server_us_per_frame "nchan-$name" accepted)
                elif [[ $figure == server_us_per_open ]]; then
                    h=$(server_us_per_open "$name"); n=$(server_us_per_open "nchan-$name")
                else
                    h=$(median "$figure" "$name"); n=$(median "$figure" "nchan-$name")
                fi
                printf '%-17s %-26s %10s %10s %7s
' "$name" "$figure" "$h" "$n" "$(ratio "$h" "$n")"
            done
        done
        echo "lost frames (worst run, missing + duplicate + unexpected): herald $(for e in "${selected[@]}"; do n=${e%%|*}; worst missing "$n"; done | sort -g | tail -n 1), nchan $(for e in "${selected[@]}"; do n=${e%%|*}; worst missing "nchan-$n"; done | sort -g | tail -n 1)"
    } | tee "$OUT/ratios.txt"
fi
say "done; every run's output is in $OUT"
