#!/bin/sh
# Starts Kamailio with deploy/kamailio/kamailio.cfg in a container (deploy/kamailio/Dockerfile,
# docker-compose.cluster.yml), writing the relays' and the trunks' lists from the environment,
# as deploy/local-cluster.sh writes them from its own layout:
#
#   KAMAILIO_LISTEN        the SIP socket the trunks reach, e.g. udp:203.0.113.5:5060 (Kamailio
#                          also listens on TCP at the same address and port)
#   KAMAILIO_RELAYS        the relays, space-separated SIP URIs: "sip:203.0.113.5:5070 sip:..."
#   KAMAILIO_TRUNKS        the trunks' source addresses or CIDRs, space- or comma-separated
#   KAMAILIO_PIKE_DENSITY  requests per 2 s from one trunk address before it is blocked (400)
#   KAMAILIO_ANSWER_TIMEOUT_MS  ms a relay that said 100/180 has to answer before the call
#                          goes to the next relay (15000; above the relays' mint plus connect
#                          deadlines)
#   KAMAILIO_RUN_DIR       where the lists and the control socket go (/run/kamailio)
#   KAMAILIO_CFG           the configuration (/etc/kamailio/voxrelay.cfg)
#
#   entrypoint.sh          run Kamailio in the foreground, logging to stderr
#   entrypoint.sh check    only check the configuration with these parameters (kamailio -c)
set -eu

die() { echo "voxrelay-kamailio: $*" >&2; exit 1; }

listen=${KAMAILIO_LISTEN:?set KAMAILIO_LISTEN, e.g. udp:203.0.113.5:5060}
relays=${KAMAILIO_RELAYS:?set KAMAILIO_RELAYS, e.g. "sip:203.0.113.5:5070 sip:203.0.113.5:5072"}
trunks=${KAMAILIO_TRUNKS:?set KAMAILIO_TRUNKS to the trunks addresses, e.g. 198.51.100.0/24}
pike=${KAMAILIO_PIKE_DENSITY:-400}
answer=${KAMAILIO_ANSWER_TIMEOUT_MS:-15000}
run=${KAMAILIO_RUN_DIR:-/run/kamailio}
cfg=${KAMAILIO_CFG:-/etc/kamailio/voxrelay.cfg}

# The values end up in Kamailio's configuration: only plain addresses get through.
case "$listen" in
    udp:*:[0-9]*|tcp:*:[0-9]*) ;;
    *) die "KAMAILIO_LISTEN must be udp:ADDRESS:PORT (or tcp:), not '$listen'" ;;
esac
printf '%s' "$listen" | grep -Eq '^(udp|tcp):[][0-9A-Za-z.:-]+$' \
    || die "KAMAILIO_LISTEN holds characters an address does not: '$listen'"
# SIP over TCP on the same address and port as the UDP socket
listen_tcp="tcp:${listen#*:}"
printf '%s' "$pike" | grep -Eq '^[1-9][0-9]{0,6}$' || die "KAMAILIO_PIKE_DENSITY must be a number"
printf '%s' "$answer" | grep -Eq '^[1-9][0-9]{3,5}$' \
    || die "KAMAILIO_ANSWER_TIMEOUT_MS must be a number of milliseconds (1000 or more)"

mkdir -p "$run"
# "set destination flags": flag 8 starts each relay in probing mode (no calls before its first
# 200 to OPTIONS), as in deploy/kamailio/dispatcher.list.
: >"$run/dispatcher.list"
for r in $relays; do
    printf '%s' "$r" | grep -Eq '^sip:[][0-9A-Za-z.:-]+$' \
        || die "KAMAILIO_RELAYS: '$r' is not sip:HOST:PORT"
    echo "1 $r 8" >>"$run/dispatcher.list"
done
[ -s "$run/dispatcher.list" ] || die "KAMAILIO_RELAYS lists no relay"

# "group address netmask port tag", group 1 as in deploy/kamailio/trunks.list.
: >"$run/trunks.list"
for t in $(echo "$trunks" | tr ',' ' '); do
    addr=${t%/*}
    case "$t" in
        */*) mask=${t#*/} ;;
        *:*) mask=128 ;;
        *) mask=32 ;;
    esac
    printf '%s' "$addr" | grep -Eq '^[0-9A-Fa-f.:]+$' || die "KAMAILIO_TRUNKS: '$t' is not an address"
    printf '%s' "$mask" | grep -Eq '^[0-9]{1,3}$' || die "KAMAILIO_TRUNKS: '$t' has a bad prefix length"
    echo "1 $addr $mask 0 trunk" >>"$run/trunks.list"
done
[ -s "$run/trunks.list" ] || die "KAMAILIO_TRUNKS lists no address"

set -- "$@" ""
mode=$1
kam=$(command -v kamailio || echo /usr/sbin/kamailio)
params="-m 64 -M 8 -Y $run"
if [ "$mode" = check ]; then
    params="-c $params"
else
    params="-DD -E $params"
fi
# shellcheck disable=SC2086 # $params is a list of options
exec "$kam" -f "$cfg" $params \
    -A "LISTEN=$listen" \
    -A "LISTEN_TCP=$listen_tcp" \
    -A "DISPATCHER_LIST=\"$run/dispatcher.list\"" \
    -A "TRUNKS_LIST=\"$run/trunks.list\"" \
    -A "CTL_SOCKET=\"unix:$run/kamailio_ctl\"" \
    -A "PIKE_DENSITY=$pike" \
    -A "ANSWER_TIMEOUT=$answer"
