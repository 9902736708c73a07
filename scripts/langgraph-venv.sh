#!/usr/bin/env bash
# Prints the path of a virtualenv holding the LangGraph server the tests use (Tests/Engines/langgraph/
# requirements.txt), creating it first if needed. The venv is cached per requirements file under
# ${HERALD_CACHE_DIR:-~/.cache/herald}, so only the first run installs (a few minutes from PyPI).
# Safe to call concurrently: one caller installs, the others wait for it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
requirements="$ROOT/Tests/Engines/langgraph/requirements.txt"
cache=${HERALD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/herald}
digest=$(sha256sum "$requirements" | cut -c1-12)
venv="$cache/langgraph-$digest"

mkdir -p "$cache"
exec 9>"$venv.lock"
flock 9
if [[ ! -e $venv/.complete ]]; then
    echo "langgraph-venv: installing the LangGraph server into $venv (once)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    log=$(mktemp)
    if ! "$venv/bin/pip" install --disable-pip-version-check -q -r "$requirements" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "langgraph-venv: pip install failed" >&2
        exit 1
    fi
    rm -f "$log"
    touch "$venv/.complete"
fi
echo "$venv"
