#!/usr/bin/env bash
# A voxrelay cluster on loopback, without Docker: Debian's kamailio in front of N relays that
# book on one PostgreSQL (started here with initdb/pg_ctl; each relay gets its own SQLite file
# when PostgreSQL's server binaries are missing, and then the schedule is NOT shared).
#
#   deploy/local-cluster.sh up [N]   start Kamailio, N relays (default 2) and PostgreSQL
#   deploy/local-cluster.sh down     stop everything `up` started and remove its state
#
# Layout: Kamailio on 127.0.0.1:$CLUSTER_SIP_PORT (UDP, default 5060) is the cluster's SIP
# address; relay i (1..N) listens on 127.0.0.$((10+i)):5060 for SIP and :8080 for its admin
# API, with its own RTP port range; PostgreSQL on 127.0.0.1:$CLUSTER_PG_PORT (default 55432).
# State (pid files, logs, the database) lives in $VOXRELAY_CLUSTER_DIR
# (default /tmp/voxrelay-cluster). CLUSTER_PIKE_DENSITY: Kamailio's flood limit, requests per
# 2 s from one source (default 400, about 65 calls a second from one trunk). CLUSTER_RTP_BASE:
# the first relay's first RTP port (default 20000; relay i gets 1000 ports from
# CLUSTER_RTP_BASE + (i-1)*1000). The relay binary is $VOXRELAY_BIN, else target/release or
# target/debug's. The relays take the rest of their settings from config/voxrelay.toml and
# the environment (OPENAI_API_KEY, VOXRELAY__...), as a single relay does.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
state=${VOXRELAY_CLUSTER_DIR:-/tmp/voxrelay-cluster}
sip_port=${CLUSTER_SIP_PORT:-5060}
pg_port=${CLUSTER_PG_PORT:-55432}

die() { echo "local-cluster: $*" >&2; exit 1; }

relay_bin() {
    if [ -n "${VOXRELAY_BIN:-}" ]; then echo "$VOXRELAY_BIN"; return; fi
    for b in "$repo/target/release/voxrelay" "$repo/target/debug/voxrelay"; do
        if [ -x "$b" ]; then echo "$b"; return; fi
    done
    die "no voxrelay binary: run cargo build (or set VOXRELAY_BIN)"
}

pg_bindir() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

# Runs a PostgreSQL tool as the postgres user when we are root (initdb refuses root).
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Waits (at most $2 tenths of a second) until the relay whose admin address is $1 is healthy
# (GET /healthz answers 200: SIP, media and the database up), or its process $3 died.
wait_ready() {
    local admin=$1 tries=$2 pid=$3
    for _ in $(seq "$tries"); do
        kill -0 "$pid" 2>/dev/null || return 1
        if curl -sf -o /dev/null "http://$admin/healthz"; then return 0; fi
        sleep 0.1
    done
    return 1
}

# Stops the process in pid file $1: SIGTERM (relays drain their calls), then SIGKILL after
# $2 seconds.
stop_pid() {
    local file=$1 grace=$2 pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq $((grace * 10))); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

down() {
    [ -d "$state" ] || { echo "local-cluster: nothing to stop ($state does not exist)"; return 0; }
    stop_pid "$state/kamailio.pid" 5
    for f in "$state"/relay*.pid; do
        [ -e "$f" ] && stop_pid "$f" 15
    done
    if [ -f "$state/pg/data/postmaster.pid" ]; then
        as_pg "$(pg_bindir)/pg_ctl" -D "$state/pg/data" -m fast -w -t 30 stop >/dev/null || true
    fi
    rm -rf "$state"
    echo "local-cluster: stopped"
}

up() {
    local n=${1:-2}
    [[ "$n" =~ ^[1-9][0-9]?$ ]] || die "N must be 1..99"
    command -v kamailio >/dev/null || [ -x /usr/sbin/kamailio ] \
        || die "kamailio is not installed (apt-get install --no-install-recommends kamailio)"
    local kam=$(command -v kamailio || echo /usr/sbin/kamailio)
    [ -e "$state" ] && die "$state exists: already up? (run: $0 down)"
    command -v curl >/dev/null || die "curl is needed to see that each relay is up"
    local bin; bin=$(relay_bin)
    mkdir -p "$state"
    # Whatever fails from here on stops what was started, so nothing is left behind.
    trap 'if [ $? -ne 0 ]; then echo "local-cluster: start failed; stopping what was started" >&2; down; fi' EXIT

    # The shared schedule.
    local db_url bindir; bindir=$(pg_bindir)
    if [ -n "$bindir" ] && [ -x "$bindir/initdb" ]; then
        mkdir -p "$state/pg"
        [ "$(id -u)" = 0 ] && chown postgres "$state/pg"
        as_pg "$bindir/initdb" -D "$state/pg/data" -U postgres --auth=trust --encoding=UTF8 \
            --no-locale >"$state/pg/initdb.log" 2>&1
        as_pg "$bindir/pg_ctl" -D "$state/pg/data" -l "$state/pg/server.log" -w -t 60 \
            -o "-p $pg_port -c listen_addresses=127.0.0.1 -k $state/pg" start >/dev/null
        "$bindir/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres voxrelay
        db_url="postgres://postgres@127.0.0.1:$pg_port/voxrelay"
        echo "bookings:  PostgreSQL $db_url (shared by every relay)"
    else
        db_url=""
        echo "bookings:  PostgreSQL not found: each relay has its own SQLite file (NOT shared)"
    fi

    # The relays. With PostgreSQL they form one cluster (cluster.node_id relayI): any relay's
    # admin API and dashboard show every relay's calls. The secret they sign their requests to
    # each other with is made here, readable by this user only.
    local secret=""
    if [ -n "$db_url" ]; then
        (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$state/cluster.secret")
        secret=$(cat "$state/cluster.secret")
    fi
    : >"$state/dispatcher.list"
    for i in $(seq "$n"); do
        local ip="127.0.0.$((10 + i))" lo=$((${CLUSTER_RTP_BASE:-20000} + (i - 1) * 1000))
        local url=${db_url:-"sqlite://$state/relay$i.db"}
        mkdir -p "$state/relay$i"
        (
            cd "$state/relay$i"
            VOXRELAY__SIP__LISTEN="$ip:5060" \
            VOXRELAY__SIP__RTP_PORTS="[$lo, $((lo + 999))]" \
            VOXRELAY__ADMIN__LISTEN="$ip:8080" \
            VOXRELAY__BOOKING__DATABASE_URL="$url" \
            VOXRELAY__BRIDGE__DRAIN_SECONDS="${VOXRELAY__BRIDGE__DRAIN_SECONDS:-10}" \
                exec env ${secret:+VOXRELAY__CLUSTER__NODE_ID="relay$i" VOXRELAY__CLUSTER__SECRET="$secret"} \
                "$bin" serve --config "$repo/config/voxrelay.toml" \
                >"$state/relay$i.log" 2>&1 </dev/null
        ) &
        echo $! >"$state/relay$i.pid"
        wait_ready "$ip:8080" 300 "$(cat "$state/relay$i.pid")" \
            || { tail -n 20 "$state/relay$i.log" >&2; die "relay $i did not start (its log is above)"; }
        echo "1 sip:$ip:5060 8" >>"$state/dispatcher.list"
        echo "relay $i:   sip:$ip:5060  admin http://$ip:8080/"
    done

    # Kamailio in front. Loopback callers may call (the trunks' list).
    echo "1 127.0.0.0 8 0 loopback" >"$state/trunks.list"
    "$kam" -f "$here/kamailio/kamailio.cfg" -DD -E -m 64 -M 8 -Y "$state" \
        -A "LISTEN=udp:127.0.0.1:$sip_port" \
        -A "DISPATCHER_LIST=\"$state/dispatcher.list\"" \
        -A "TRUNKS_LIST=\"$state/trunks.list\"" \
        -A "CTL_SOCKET=\"unix:$state/kamailio_ctl\"" \
        -A "PIKE_DENSITY=${CLUSTER_PIKE_DENSITY:-400}" \
        >"$state/kamailio.log" 2>&1 </dev/null &
    echo $! >"$state/kamailio.pid"
    # Ready when every relay answered its first probe.
    local ok=""
    for _ in $(seq 100); do
        if kamcmd -s "unix:$state/kamailio_ctl" dispatcher.list 2>/dev/null \
            | grep -c 'FLAGS: A' | grep -qx "$n"; then ok=1; break; fi
        sleep 0.1
    done
    [ -n "$ok" ] || { tail -n 20 "$state/kamailio.log" >&2; die "Kamailio did not see every relay up (its log is above)"; }
    trap - EXIT
    echo
    echo "cluster SIP address: sip:127.0.0.1:$sip_port (UDP)"
    if [ -n "$secret" ]; then
        echo "admin:               http://127.0.0.11:8080/ (any relay's shows the whole cluster; relay i at 127.0.0.(10+i))"
    else
        echo "admin:               http://127.0.0.11:8080/ (relay 1; relay i at 127.0.0.(10+i))"
    fi
    echo "dispatcher state:    kamcmd -s unix:$state/kamailio_ctl dispatcher.list"
    echo "stop:                $0 down"
}

case "${1:-}" in
    up) up "${2:-2}" ;;
    down) down ;;
    *) echo "usage: $0 up [N] | down" >&2; exit 2 ;;
esac
