# shellcheck shell=bash
# Process helpers shared by the scripts (sourced; the caller defines `die`).

# A daemon killed hard stays a zombie until its parent (often pid 1 in a container) reaps it, and kill -0 still
# succeeds on it.
alive() { # PID: the process exists and is not a zombie
    local stat
    [[ $1 =~ ^[0-9]+$ ]] && kill -0 "$1" 2>/dev/null || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

listening() { # PORT: something accepts connections on 127.0.0.1:PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# shellcheck disable=SC2317 # called from the callers' EXIT traps
stop_pid() { # PID: SIGTERM, then SIGKILL after 10 s; reaps it
    local pid=$1 i
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

wait_healthy() { # NAME URL PID [LOG]: until URL answers 200 (at most 60 s), or the process dies
    local name=$1 url=$2 pid=$3 log=${4:-} i
    for ((i = 0; i < 300; i++)); do
        curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
        if ! kill -0 "$pid" 2>/dev/null || [[ $(ps -o stat= -p "$pid" 2>/dev/null) == Z* ]]; then
            [[ -n $log ]] && tail -n 30 "$log" >&2
            die "$name exited before answering $url${log:+; see $log}"
        fi
        sleep 0.2
    done
    die "$name did not answer $url within 60 s${log:+; see $log}"
}
