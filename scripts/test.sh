#!/usr/bin/env bash
# `make test`: every test of the package.
#   scripts/test.sh [swift test args...]     e.g. scripts/test.sh --filter Webhook
# Installs what is missing (scripts/install-deps.sh), builds the package and its
# tests (debug), then runs `swift test` (the Redis Cluster suites last, on their
# own), printing how long each step took. The
# tests start their own Redis and PostgreSQL on free ports in temp dirs, so
# nothing is started here; the server binaries only have to be installed.
# Exits non-zero when the build or any test fails.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

bash "$ROOT/scripts/install-deps.sh"

# Debian keeps initdb/postgres/pg_ctl out of PATH (/usr/lib/postgresql/N/bin):
# append the newest there, for test support code that looks them up on PATH.
pg_bin=$(compgen -G '/usr/lib/postgresql/*/bin/postgres' | sort -V | tail -n 1 || true)
if [[ -n $pg_bin ]]; then
    PATH="$PATH:${pg_bin%/postgres}"
    export PATH
fi

now() { date +%s%N; }
secs() { # nanoseconds -> seconds with one decimal
    local ns=$1
    printf '%d.%d' $((ns / 1000000000)) $((ns % 1000000000 / 100000000))
}

# The engine tests run a real LangGraph server from PyPI, installed into a cached virtualenv
# (scripts/langgraph-venv.sh): prepared in the background while Swift builds.
venv_log=$(mktemp)
bash "$ROOT/scripts/langgraph-venv.sh" >"$venv_log" 2>&1 &
venv_pid=$!
# The OpenAPI contract tests validate with openapi-spec-validator and jsonschema (scripts/openapi-venv.sh).
openapi_venv_log=$(mktemp)
bash "$ROOT/scripts/openapi-venv.sh" >"$openapi_venv_log" 2>&1 &
openapi_venv_pid=$!
# The HTTP/2 tests' client is Python's h2 (Tests/HTTP2/requirements.txt).
h2_venv_log=$(mktemp)
bash "$ROOT/scripts/python-venv.sh" h2 "$ROOT/Tests/HTTP2/requirements.txt" >"$h2_venv_log" 2>&1 &
h2_venv_pid=$!

start=$(now)
if ! swift build --build-tests; then
    echo "test.sh: build FAILED after $(secs $(($(now) - start))) s" >&2
    exit 1
fi
build_ns=$(($(now) - start))
echo "test.sh: build took $(secs "$build_ns") s"
if ! wait "$venv_pid"; then
    cat "$venv_log" >&2
    echo "test.sh: preparing the LangGraph virtualenv FAILED" >&2
    exit 1
fi
rm -f "$venv_log"
if ! wait "$openapi_venv_pid"; then
    cat "$openapi_venv_log" >&2
    echo "test.sh: preparing the OpenAPI validators' virtualenv FAILED" >&2
    exit 1
fi
rm -f "$openapi_venv_log"
if ! wait "$h2_venv_pid"; then
    cat "$h2_venv_log" >&2
    echo "test.sh: preparing the HTTP/2 client's virtualenv FAILED" >&2
    exit 1
fi
rm -f "$h2_venv_log"

start=$(now)
set +e
if (($# == 0)); then
    # The Redis Cluster suites (six redis-servers and two Herald nodes each, a failover, a migration) run after
    # the rest rather than beside it: on two cores, together they starve timing-sensitive neighbours.
    swift test --skip-build --skip RedisCluster && swift test --skip-build --filter RedisCluster
else
    swift test --skip-build "$@"
fi
rc=$?
set -e
test_ns=$(($(now) - start))
if ((rc == 0)); then
    echo "test.sh: build $(secs "$build_ns") s, tests $(secs "$test_ns") s: passed"
else
    echo "test.sh: build $(secs "$build_ns") s, tests $(secs "$test_ns") s: FAILED (swift test exit $rc)" >&2
    exit "$rc"
fi

# The full suite ends with a short libFuzzer run of the webhook decoder and frame builder
# (scripts/fuzz.sh; a longer run: scripts/fuzz.sh 600). Skipped when only some tests were asked for.
if (($# == 0)); then
    start=$(now)
    bash "$ROOT/scripts/fuzz.sh" "${HERALD_FUZZ_SECONDS:-15}"
    echo "test.sh: fuzzing took $(secs $(($(now) - start))) s: no crash"
fi
