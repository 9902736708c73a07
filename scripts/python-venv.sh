#!/usr/bin/env bash
# scripts/python-venv.sh NAME REQUIREMENTS
# Prints the path of a virtualenv holding REQUIREMENTS (a pip requirements file), creating it first if needed.
# The venv is cached per requirements file under ${HERALD_CACHE_DIR:-~/.cache/herald}/NAME-<hash>, so only the
# first run installs from PyPI. Safe to call concurrently: one caller installs, the others wait for it.
set -euo pipefail

name=$1
requirements=$2
cache=${HERALD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/herald}
digest=$(sha256sum "$requirements" | cut -c1-12)
venv="$cache/$name-$digest"

mkdir -p "$cache"
exec 9>"$venv.lock"
flock 9
if [[ ! -e $venv/.complete ]]; then
    echo "python-venv: installing $requirements into $venv (once)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    log=$(mktemp)
    if ! "$venv/bin/pip" install --disable-pip-version-check -q -r "$requirements" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "python-venv: pip install failed" >&2
        exit 1
    fi
    rm -f "$log"
    touch "$venv/.complete"
fi
echo "$venv"
