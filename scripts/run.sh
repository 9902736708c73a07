#!/usr/bin/env bash
# `make run`: Herald on this machine, with everything it needs.
#   1. installs missing Debian packages   (scripts/install-deps.sh)
#   2. builds the `herald` executable
#   3. starts Redis and PostgreSQL under .data/   (scripts/services.sh start)
#   4. applies the migrations   (herald migrate)
#   5. starts the demo agent in the background on 127.0.0.1:$DEMO_AGENT_PORT (8090),
#      logging to .data/demo-agent.log -- unless AGENT_URL names an engine of your own
#      (a `langgraph dev` server, say: see docs/webhooks.md)
#   6. runs `herald serve` on $HERALD_HOST:$HERALD_PORT (127.0.0.1:8080) and, once it
#      answers /healthz, prints the chat page's URL, a token and a curl example
# Ctrl-C stops Herald and the demo agent (if started); Redis and PostgreSQL keep running
# (`make stop` stops them).
#
# env (all optional): HERALD_PORT (8080), HERALD_HOST (127.0.0.1), DEMO_AGENT_PORT
# (8090), REDIS_PORT (6390), PG_PORT (5440), AGENT_URL (the demo agent), AGENT_KIND
# (langgraph), AGENT_ASSISTANT_ID (agent), AGENT_API_KEY, HERALD_BUILD_CONFIG (debug|release),
# HERALD_SKIP_BUILD=1 (use the binary already built), HERALD_BIN (run that
# binary, no build), REDIS_CLUSTER_NODES (run on that Redis Cluster instead of .data/'s Redis, e.g. the
# one `make cluster` starts), and any other HERALD_* the server reads
# (HERALD_HEARTBEAT_SECONDS, HERALD_RUN_TIMEOUT_SECONDS, ...).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

say() { echo "run: $*" >&2; }
die() { say "$*"; exit 1; }
# shellcheck source=scripts/lib/processes.sh
source "$ROOT/scripts/lib/processes.sh"

# Debug by default, not release: a release build of this package (SwiftNIO,
# Hummingbird, with whole-module optimisation) takes several times longer on a
# 2-core machine, and the debug build is the one `make test` already made, so
# `make run` after `make test` (or the other way round) rebuilds next to nothing.
# For a demo on loopback, debug is fast enough. HERALD_BUILD_CONFIG=release for
# the optimised binary.
CONFIG=${HERALD_BUILD_CONFIG:-debug}
HERALD_PORT=${HERALD_PORT:-8080}
HERALD_HOST=${HERALD_HOST:-127.0.0.1}
DEMO_AGENT_PORT=${DEMO_AGENT_PORT:-8090}
DATA=${HERALD_DATA_DIR:-$ROOT/.data}
BIN=${HERALD_BIN:-$ROOT/.build/$CONFIG/herald}

bash "$ROOT/scripts/install-deps.sh"

if [[ ${HERALD_SKIP_BUILD:-0} != 1 && -z ${HERALD_BIN:-} ]]; then
    say "building herald ($CONFIG; the first build takes several minutes)"
    swift build -c "$CONFIG" --product herald || die "swift build failed (see above)"
fi
[[ -x $BIN ]] || die "no herald binary at $BIN: build it with 'swift build -c $CONFIG --product herald' (or unset HERALD_SKIP_BUILD)"

OWN_ENGINE=${AGENT_URL:-}
[[ -z $OWN_ENGINE ]] && listening "$DEMO_AGENT_PORT" && die "port $DEMO_AGENT_PORT is in use (a demo agent left from an earlier run?); free it or set DEMO_AGENT_PORT"
listening "$HERALD_PORT" && die "port $HERALD_PORT is in use; free it or set HERALD_PORT"

bash "$ROOT/scripts/services.sh" start
eval "$(bash "$ROOT/scripts/services.sh" env)" # REDIS_URL, DATABASE_URL
if [[ -n ${REDIS_CLUSTER_NODES:-} ]]; then
    REDIS_URL="redis+cluster://$REDIS_CLUSTER_NODES"
    unset REDIS_CLUSTER_NODES # the server takes one of the two
fi

export REDIS_URL DATABASE_URL HERALD_HOST HERALD_PORT
export AGENT_URL=${OWN_ENGINE:-http://127.0.0.1:$DEMO_AGENT_PORT}
export AGENT_KIND=${AGENT_KIND:-langgraph}
export AGENT_ASSISTANT_ID=${AGENT_ASSISTANT_ID:-agent}
export PUBLIC_URL="http://127.0.0.1:$HERALD_PORT" # where the agent posts its webhooks back

say "applying migrations"
"$BIN" migrate || die "herald migrate failed (DATABASE_URL=$DATABASE_URL)"

DEMO_PID=
HERALD_PID=
# shellcheck disable=SC2317 # the EXIT trap
cleanup() {
    trap - EXIT INT TERM
    stop_pid "$HERALD_PID"
    stop_pid "$DEMO_PID"
    [[ -n $DEMO_PID ]] && say "stopped Herald and the demo agent (Redis and PostgreSQL keep running: make stop)"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_healthy NAME URL PID LOG: until URL answers 200, or the process dies.

# Local development credentials: without HERALD_JWT_SECRET Herald runs in its loudly announced
# insecure development mode (tokens signed with a published secret); the demo agent signs its
# webhooks with a development Standard Webhooks secret that Herald is given too.
export HERALD_WEBHOOK_SECRET=${HERALD_WEBHOOK_SECRET:-whsec_ZGV2ZWxvcG1lbnQtb25seS13ZWJob29rLXNlY3JldA==}
SERVE_FLAGS=()
TOKEN_FLAGS=()
SIGN_IN="paste the token below"
if [[ -z ${HERALD_JWT_SECRET:-} ]]; then
    SERVE_FLAGS=(--insecure-dev)
    TOKEN_FLAGS=(--insecure-dev)
    SIGN_IN="sign in with any user name"
fi

mkdir -p "$DATA"
if [[ -z $OWN_ENGINE ]]; then
    "$BIN" demo-agent --host 127.0.0.1 --port "$DEMO_AGENT_PORT" >"$DATA/demo-agent.log" 2>&1 &
    DEMO_PID=$!
    wait_healthy "the demo agent" "$AGENT_URL/healthz" "$DEMO_PID" "$DATA/demo-agent.log"
    say "demo agent up at $AGENT_URL (pid $DEMO_PID, log $DATA/demo-agent.log)"
    ENGINE_LINE="demo agent:    $AGENT_URL   (log: $DATA/demo-agent.log)"
    STOPS="Herald and the demo agent"
else
    say "using the engine at $AGENT_URL (no demo agent)"
    ENGINE_LINE="engine:        $AGENT_URL   ($AGENT_KIND, assistant $AGENT_ASSISTANT_ID)"
    STOPS="Herald"
fi

# Herald runs as a child that this script waits for (rather than exec'd), so that
# the trap can stop the demo agent with it; Ctrl-C or SIGTERM to this script
# sends SIGTERM to both (graceful shutdown).
"$BIN" serve "${SERVE_FLAGS[@]}" &
HERALD_PID=$!
wait_healthy "herald serve" "http://127.0.0.1:$HERALD_PORT/healthz" "$HERALD_PID" ""

BASE="http://127.0.0.1:$HERALD_PORT"
TOKEN=$("$BIN" token --user demo --ttl 24h "${TOKEN_FLAGS[@]}")
cat <<BANNER

  Chat page:     $BASE/     ($SIGN_IN)
  Herald is up:  $BASE     (Ctrl-C stops $STOPS)
  $ENGINE_LINE
  Redis:         $REDIS_URL
  PostgreSQL:    $DATABASE_URL
  token (user "demo", 24 h):
    $TOKEN

  Try it in another terminal (paste the whole block):

BASE=$BASE
AUTH="Authorization: Bearer $TOKEN"
THREAD=\$(curl -s -X POST \$BASE/chats -H "\$AUTH" -H 'Content-Type: application/json' -d '{"title":"demo"}' | grep -o '"id" *: *"[^"]*"' | head -n 1 | cut -d '"' -f 4); echo "thread \$THREAD"
curl -sN -H "\$AUTH" \$BASE/chats/sse/\$THREAD &    # the thread's event stream, printed here
sleep 1; curl -s -X POST \$BASE/chats/\$THREAD/send -H "\$AUTH" -H 'Content-Type: application/json' -d '{"content":"hello"}'; echo
sleep 5; kill %1                        # stop the stream

BANNER

set +e
wait "$HERALD_PID"
rc=$?
set -e
HERALD_PID=
say "herald serve exited with status $rc"
exit "$rc"
