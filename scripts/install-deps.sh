#!/usr/bin/env bash
# Installs the Debian packages Herald needs to build, test and run, and only those
# that are missing: the C libraries it links (hiredis, libcurl, libpq), pkg-config
# (SwiftPM finds hiredis and libpq through it), the Redis and PostgreSQL server
# binaries that `make run` and the tests start themselves, Python with venv for the
# tests' LangGraph server, and headless Chromium with chromedriver, which the chat
# page's tests drive.
#
# Silent when everything is there; `apt-get update` runs only when something is
# missing. The Debian-managed redis/postgresql services are not started: our own
# instances live under .data/ (or temp dirs in the tests) on their own ports.
set -euo pipefail

missing=()

have_pkg() { # package installed (dpkg status "install ok installed")
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}
have_pg_server() { # some PostgreSQL major version's server binaries
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null &&
        compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

have_pkg libhiredis-dev       || missing+=(libhiredis-dev)
have_pkg libcurl4-openssl-dev || missing+=(libcurl4-openssl-dev)
have_pkg libpq-dev            || missing+=(libpq-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
{ command -v redis-server && command -v redis-cli; } >/dev/null 2>&1 || missing+=(redis-server)
have_pg_server || missing+=(postgresql)
command -v curl >/dev/null 2>&1 || missing+=(curl)   # scripts/run.sh polls /healthz with it
command -v openssl >/dev/null 2>&1 || missing+=(openssl)   # the TLS tests make their CA and certificates with it
# The engine tests' LangGraph server lives in a virtualenv (scripts/langgraph-venv.sh).
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
have_pkg chromium        || missing+=(chromium)
have_pkg chromium-driver || missing+=(chromium-driver)

if ((${#missing[@]})); then
    echo "install-deps: installing ${missing[*]}" >&2
    if [[ $EUID -eq 0 ]]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install-deps: missing ${missing[*]} and not root (no sudo): install them by hand" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages' postinst scripts from starting the system-wide services
    # (invoke-rc.d honours /usr/sbin/policy-rc.d exiting 101). Only if there is
    # none yet, and removed again afterwards.
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 755 "$policy"
        trap '"${SUDO[@]}" rm -f "$policy"' EXIT
    fi
    log=$(mktemp)
    if ! { "${SUDO[@]}" apt-get update -qq &&
        "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "install-deps: apt-get failed" >&2
        exit 1
    fi
    rm -f "$log"
    echo "install-deps: done" >&2
fi

# PostgreSQL refuses to run as root; the scripts and the tests run it as the
# `postgres` system user, which the Debian package creates. Make sure it exists.
if [[ $EUID -eq 0 ]] && ! id -u postgres >/dev/null 2>&1; then
    useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
    echo "install-deps: created system user postgres" >&2
fi
