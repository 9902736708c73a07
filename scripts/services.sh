#!/usr/bin/env bash
# Redis and PostgreSQL for running Herald locally, kept under .data/:
#   .data/redis      Redis (appendonly), bound to 127.0.0.1:$REDIS_PORT (default 6390)
#   .data/postgres   PostgreSQL cluster, 127.0.0.1:$PG_PORT (default 5440), trust auth,
#                    superuser `postgres`, database `herald` (created once)
#
# usage: scripts/services.sh start|stop|status|env
#   start   start both (already running is fine); waits until each answers
#   stop    stop both (data is kept; `make clean` removes it)
#   status  tell whether each runs; exit 0 only if both do
#   env     print `export REDIS_URL=...` and `export DATABASE_URL=...` lines:
#           eval "$(scripts/services.sh env)"
#
# env: REDIS_PORT, PG_PORT, HERALD_DATA_DIR (default <repo>/.data), PG_BIN (the
# PostgreSQL server bin dir; default the newest /usr/lib/postgresql/*/bin).
# The tests do not use this: they start their own servers on free ports.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${HERALD_DATA_DIR:-$ROOT/.data}
REDIS_PORT=${REDIS_PORT:-6390}
PG_PORT=${PG_PORT:-5440}
REDIS_DIR=$DATA/redis
PG_DIR=$DATA/postgres
PG_SUPERUSER=postgres
DB_NAME=herald

REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
DATABASE_URL="postgresql://$PG_SUPERUSER@127.0.0.1:$PG_PORT/$DB_NAME"

say() { echo "services: $*" >&2; }
die() { say "$*"; exit 1; }
# shellcheck source=scripts/lib/processes.sh
source "$ROOT/scripts/lib/processes.sh" # alive

# ---------------------------------------------------------------- Redis

redis_cli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
redis_answers() { [[ $(redis_cli ping 2>/dev/null) == PONG ]]; }
redis_is() { # the redis-server answering on REDIS_PORT has pid $1
    [[ $(redis_cli info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p') == "$1" ]]
}
redis_pid() { # pid of our redis-server, if it runs
    local pid
    [[ -f $REDIS_DIR/redis.pid ]] || return 1
    pid=$(<"$REDIS_DIR/redis.pid")
    alive "$pid" && echo "$pid"
}

redis_start() {
    command -v redis-server >/dev/null || die "redis-server not found: run scripts/install-deps.sh"
    local pid port
    if pid=$(redis_pid); then
        port=$(cat "$REDIS_DIR/port" 2>/dev/null || true)
        [[ $port == "$REDIS_PORT" ]] || redis_is "$pid" ||
            die "the redis of $REDIS_DIR already runs (pid $pid) on port ${port:-?}, not $REDIS_PORT: stop it first or set REDIS_PORT=${port:-?}"
        echo "$REDIS_PORT" >"$REDIS_DIR/port"
        say "redis already running (pid $pid) on 127.0.0.1:$REDIS_PORT"
    else
        redis_answers && die "port $REDIS_PORT already answers as Redis but not ours ($REDIS_DIR/redis.pid); set REDIS_PORT"
        mkdir -p "$REDIS_DIR"
        rm -f "$REDIS_DIR/redis.pid"
        redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes \
            --dir "$REDIS_DIR" --appendonly yes \
            --daemonize yes --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" ||
            die "redis-server failed to start; see $REDIS_DIR/redis.log"
        echo "$REDIS_PORT" >"$REDIS_DIR/port"
    fi
    local i
    for ((i = 0; i < 100; i++)); do
        pid=$(redis_pid) && redis_is "$pid" && { say "redis ready at $REDIS_URL (data $REDIS_DIR)"; return 0; }
        sleep 0.2
    done
    tail -n 20 "$REDIS_DIR/redis.log" >&2 2>/dev/null || true
    die "redis did not answer on 127.0.0.1:$REDIS_PORT within 20 s; see $REDIS_DIR/redis.log"
}

redis_stop() {
    local pid i
    if ! pid=$(redis_pid); then
        say "redis not running"
        return 0
    fi
    kill -TERM "$pid" # redis shuts down cleanly on SIGTERM (flushes the AOF)
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || { say "redis stopped"; return 0; }
        sleep 0.2
    done
    die "redis (pid $pid) did not stop within 20 s"
}

# ----------------------------------------------------------- PostgreSQL

pg_bin_dir() {
    if [[ -n ${PG_BIN:-} ]]; then
        echo "$PG_BIN"
        return
    fi
    # Prefer the major version the cluster was created with.
    if [[ -f $PG_DIR/PG_VERSION && -x /usr/lib/postgresql/$(<"$PG_DIR/PG_VERSION")/bin/postgres ]]; then
        echo "/usr/lib/postgresql/$(<"$PG_DIR/PG_VERSION")/bin"
        return
    fi
    local newest
    newest=$(compgen -G '/usr/lib/postgresql/*/bin/postgres' | sort -V | tail -n 1 || true)
    [[ -n $newest ]] || die "no PostgreSQL server in /usr/lib/postgresql/*/bin: run scripts/install-deps.sh"
    dirname "$newest"
}

# PostgreSQL refuses to run as root: as root, run its tools as the `postgres`
# system user (from / so that it need not read the caller's cwd).
as_pg() {
    if [[ $EUID -eq 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

pg_answers() { "$PGB/pg_isready" -h 127.0.0.1 -p "$PG_PORT" -q; }
pg_running() { # the postmaster of $PG_DIR runs (first line of postmaster.pid)
    local pid
    [[ -f $PG_DIR/postmaster.pid ]] || return 1
    pid=$(head -n 1 "$PG_DIR/postmaster.pid")
    alive "$pid"
}
pg_psql() { "$PGB/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_SUPERUSER" -X -q -v ON_ERROR_STOP=1 "$@"; }

pg_init() {
    [[ -f $PG_DIR/PG_VERSION ]] && return 0
    say "creating PostgreSQL cluster in $PG_DIR"
    mkdir -p "$PG_DIR"
    chmod 755 "$DATA" # the postgres user must be able to reach its data dir
    if [[ $EUID -eq 0 ]]; then
        id -u postgres >/dev/null 2>&1 ||
            useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
        chown postgres: "$PG_DIR"
        runuser -u postgres -- test -w "$PG_DIR" ||
            die "the postgres user cannot reach $PG_DIR (is a parent directory not world-searchable?); set HERALD_DATA_DIR to a directory elsewhere, e.g. /var/tmp/herald-data"
    fi
    chmod 700 "$PG_DIR"
    as_pg "$PGB/initdb" -D "$PG_DIR" -U "$PG_SUPERUSER" --auth=trust --encoding=UTF8 --no-locale >"$DATA/initdb.log" 2>&1 || {
        cat "$DATA/initdb.log" >&2
        die "initdb failed"
    }
    # Trust, but TCP on 127.0.0.1 only: no Unix socket, no other address.
    as_pg tee "$PG_DIR/pg_hba.conf" >/dev/null <<'HBA'
# Herald development cluster: trust on loopback only (listen_addresses = 127.0.0.1)
# TYPE  DATABASE  USER  ADDRESS       METHOD
host    all       all   127.0.0.1/32  trust
HBA
    as_pg tee -a "$PG_DIR/postgresql.conf" >/dev/null <<'CONF'

# --- Herald (scripts/services.sh); the port is given on the command line (PG_PORT)
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
CONF
}

pg_start() {
    PGB=$(pg_bin_dir)
    if pg_running; then
        local port
        port=$(sed -n 4p "$PG_DIR/postmaster.pid")
        [[ $port == "$PG_PORT" ]] ||
            die "the postgres of $PG_DIR already runs on port $port, not $PG_PORT: stop it first or set PG_PORT=$port"
        say "postgres already running on 127.0.0.1:$PG_PORT (data $PG_DIR)"
    else
        pg_answers && die "port $PG_PORT already answers as PostgreSQL but it is not the cluster in $PG_DIR; set PG_PORT"
        pg_init
        # A postmaster killed hard whose zombie is not reaped yet: postgres would take
        # it for a live one and refuse to start. (A pid file whose process is gone
        # is left to postgres, which also checks the old shared memory then.)
        if [[ -f $PG_DIR/postmaster.pid ]] && kill -0 "$(head -n 1 "$PG_DIR/postmaster.pid")" 2>/dev/null; then
            sleep 1 # let the old backends notice their postmaster is gone
            rm -f "$PG_DIR/postmaster.pid"
        fi
        as_pg "$PGB/pg_ctl" -D "$PG_DIR" -l "$PG_DIR/server.log" -o "-p $PG_PORT" -w -t 60 start >/dev/null || {
            tail -n 20 "$PG_DIR/server.log" >&2 2>/dev/null || true
            die "postgres failed to start; see $PG_DIR/server.log"
        }
    fi
    local i
    for ((i = 0; i < 150; i++)); do
        pg_answers && break
        sleep 0.2
    done
    pg_answers || die "postgres did not answer on 127.0.0.1:$PG_PORT within 30 s (started with another PG_PORT?); see $PG_DIR/server.log"
    if [[ $(pg_psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'") != 1 ]]; then
        pg_psql -d postgres -c "CREATE DATABASE $DB_NAME" || die "could not create database $DB_NAME"
        say "created database $DB_NAME"
    fi
    say "postgres ready at $DATABASE_URL (data $PG_DIR)"
}

pg_stop() {
    PGB=$(pg_bin_dir)
    if ! pg_running; then
        say "postgres not running"
        return 0
    fi
    as_pg "$PGB/pg_ctl" -D "$PG_DIR" -m fast -w -t 60 stop >/dev/null || die "postgres did not stop"
    say "postgres stopped"
}

# ---------------------------------------------------------------- main

case ${1:-} in
start)
    redis_start
    pg_start
    ;;
stop)
    redis_stop
    pg_stop
    ;;
status)
    ok=0
    if pid=$(redis_pid); then
        if redis_is "$pid"; then
            echo "redis:    running (pid $pid) at $REDIS_URL, data $REDIS_DIR"
        else
            echo "redis:    running (pid $pid) but not answering on 127.0.0.1:$REDIS_PORT (started with another REDIS_PORT?)"
            ok=3
        fi
    else
        echo "redis:    stopped (data $REDIS_DIR)"
        ok=3
    fi
    PGB=$(pg_bin_dir)
    if pg_running; then
        if [[ $(sed -n 4p "$PG_DIR/postmaster.pid") == "$PG_PORT" ]] && pg_answers; then
            echo "postgres: running at $DATABASE_URL, data $PG_DIR"
        else
            echo "postgres: running (port $(sed -n 4p "$PG_DIR/postmaster.pid")) but not answering on 127.0.0.1:$PG_PORT"
            ok=3
        fi
    else
        echo "postgres: stopped (data $PG_DIR)"
        ok=3
    fi
    exit "$ok"
    ;;
env)
    echo "export REDIS_URL=$REDIS_URL"
    echo "export DATABASE_URL=$DATABASE_URL"
    ;;
*)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
