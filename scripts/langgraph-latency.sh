#!/usr/bin/env bash
# Measures how long a LangGraph token takes from the engine's model to a Herald SSE client.
# Starts Redis/PostgreSQL under .data/ (scripts/services.sh), a real `langgraph dev` serving
# Tests/Engines/langgraph (virtualenv from scripts/langgraph-venv.sh) and `herald serve` on free
# ports; then, RUNS times, sends "timestamps TOKENS" and reads the thread's stream: each token is the
# Unix time in microseconds at which the engine's model emitted it, so engine chunk -> SSE frame is
# the receive time minus the token (one machine, one clock). Prints p50/p90/p99/max over all tokens.
#
#   scripts/langgraph-latency.sh [RUNS (10)] [TOKENS (50)]
# env: HERALD_BUILD_CONFIG (release|debug; default release, built if missing), HERALD_BIN (run that
# binary instead, no build).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
say() { echo "langgraph-latency: $*" >&2; }
die() { say "$*"; exit 1; }
# shellcheck source=scripts/lib/processes.sh
source "$ROOT/scripts/lib/processes.sh"

RUNS=${1:-10}
TOKENS=${2:-50}
CONFIG=${HERALD_BUILD_CONFIG:-release}
BIN=${HERALD_BIN:-$ROOT/.build/$CONFIG/herald}
DATA=${HERALD_DATA_DIR:-$ROOT/.data}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

bash "$ROOT/scripts/install-deps.sh"
[[ -x $BIN ]] || swift build -c "$CONFIG" --product herald || die "swift build failed"
VENV=$(bash "$ROOT/scripts/langgraph-venv.sh")
bash "$ROOT/scripts/services.sh" start
eval "$(bash "$ROOT/scripts/services.sh" env)"
"$BIN" migrate >/dev/null

ENGINE_PID=
HERALD_PID=
WORK=$(mktemp -d)
# shellcheck disable=SC2317 # the EXIT trap
cleanup() {
    stop_pid "$HERALD_PID"
    stop_pid "$ENGINE_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT

ENGINE_PORT=$(free_port)
API_KEY=latency-$RANDOM$RANDOM
# langgraph dev resolves the config's paths from, and keeps its state in, its working directory.
cp -r "$ROOT/Tests/Engines/langgraph/." "$WORK/"
(cd "$WORK" && TEST_ENGINE_API_KEY=$API_KEY LANGSMITH_TRACING=false LANGGRAPH_CLI_NO_ANALYTICS=1 \
    exec "$VENV/bin/langgraph" dev --host 127.0.0.1 --port "$ENGINE_PORT" --no-browser --no-reload \
    --config langgraph.json >"$WORK/engine.log" 2>&1) &
ENGINE_PID=$!
wait_healthy "langgraph dev" "http://127.0.0.1:$ENGINE_PORT/ok" "$ENGINE_PID" "$WORK/engine.log"

HERALD_PORT=$(free_port)
REDIS_URL=$REDIS_URL DATABASE_URL=$DATABASE_URL HERALD_HOST=127.0.0.1 HERALD_PORT=$HERALD_PORT \
    PUBLIC_URL=http://127.0.0.1:$HERALD_PORT AGENT_URL=http://127.0.0.1:$ENGINE_PORT AGENT_KIND=langgraph \
    AGENT_ASSISTANT_ID=chat AGENT_API_KEY=$API_KEY HERALD_LOG_LEVEL=warning \
    "$BIN" serve --insecure-dev >"$WORK/herald.log" 2>&1 &
HERALD_PID=$!
wait_healthy "herald serve" "http://127.0.0.1:$HERALD_PORT/readyz" "$HERALD_PID" "$WORK/herald.log"
TOKEN=$("$BIN" token --user latency --ttl 1h --insecure-dev)

say "herald $BIN, langgraph dev $("$VENV/bin/pip" show langgraph-api 2>/dev/null | sed -n 's/^Version: //p'), $RUNS runs x $TOKENS tokens"
python3 - "$HERALD_PORT" "$TOKEN" "$RUNS" "$TOKENS" "$ENGINE_PORT" "$API_KEY" <<'PY'
import http.client, json, statistics, sys, threading, time

herald_port, token, runs, tokens, engine_port, api_key = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

def call(method, path, body=None, port=herald_port, headers=auth):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, json.dumps(body) if body is not None else None, headers)
    response = conn.getresponse()
    data = response.read()
    assert 200 <= response.status < 300, (response.status, data)
    return json.loads(data) if data else None

def engine_reader(thread, out):
    """Joins the run's stream on LangGraph directly, live, and times each AI chunk."""
    headers = {"x-api-key": api_key}
    listed = None
    while not listed:  # Herald creates the engine's thread and run in the background: wait for them
        time.sleep(0.01)
        try:
            listed = call("GET", f"/threads/{thread}/runs?limit=1", port=engine_port, headers=headers)
        except AssertionError:
            pass
    conn = http.client.HTTPConnection("127.0.0.1", engine_port, timeout=60)
    conn.request("GET", f"/threads/{thread}/runs/{listed[0]['run_id']}/stream", headers=headers)
    response = conn.getresponse()
    event = None
    while line := response.readline().decode():
        line = line.rstrip("\r\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == "messages":
            chunk = json.loads(line[6:])[0]
            if chunk.get("type") == "AIMessageChunk" and chunk.get("content", "").strip():
                out.append((time.time_ns() // 1000 - int(chunk["content"].strip())) / 1000)

latencies, engine_latencies = [], []
for run in range(runs):
    thread = call("POST", "/chats", {"title": f"latency {run}"})["id"]
    stream = http.client.HTTPConnection("127.0.0.1", herald_port, timeout=60)
    stream.request("GET", f"/chats/sse/{thread}", headers=auth)
    response = stream.getresponse()
    assert response.status == 200, response.status
    while not response.readline().startswith(b": connected"):
        pass
    call("POST", f"/chats/{thread}/send", {"content": f"timestamps {tokens}"})
    engine_side = threading.Thread(target=engine_reader, args=(thread, engine_latencies))
    engine_side.start()
    event, received = None, 0
    while True:
        line = response.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == "delta":
            now = time.time_ns() // 1000
            latencies.append((now - int(json.loads(line[6:])["delta"].strip())) / 1000)
            received += 1
        elif line.startswith("data: ") and event == "run_status" and json.loads(line[6:])["status"] not in ("queued", "running"):
            break
    stream.close()
    engine_side.join()
    assert received == tokens, f"run {run}: {received} of {tokens} deltas"

def summary(name, values):
    values = sorted(values)
    pct = lambda p: values[min(len(values) - 1, int(p / 100 * len(values)))]
    print(f"{name}, {len(values)} tokens: p50 {statistics.median(values):.1f} ms, p90 {pct(90):.1f} ms, "
          f"p99 {pct(99):.1f} ms, max {values[-1]:.1f} ms")

summary("engine chunk -> LangGraph's own SSE client", engine_latencies)
summary("engine chunk -> Herald SSE client         ", latencies)
PY
