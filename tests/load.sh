#!/bin/sh
# Saturates every core with a background CPU load, to run the suite as on a busy machine:
#   tests/load.sh start     # one busy loop per core (nproc), at normal priority; pids in $LOAD_PIDS
#   make test               # or any tests
#   tests/load.sh stop      # ends exactly the loops started above
set -eu
PIDS_FILE=${LOAD_PIDS:-${TMPDIR:-/tmp}/tipline-load.pids}

case "${1:-}" in
start)
    if [ -s "$PIDS_FILE" ]; then echo "load already running (pids in $PIDS_FILE)" >&2; exit 1; fi
    for _ in $(seq "$(nproc)"); do
        sh -c 'while :; do :; done' &
        echo $! >>"$PIDS_FILE"
    done
    echo "started $(wc -l <"$PIDS_FILE") busy loops (pids in $PIDS_FILE)"
    ;;
stop)
    if [ ! -s "$PIDS_FILE" ]; then echo "no load running" >&2; exit 0; fi
    while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$PIDS_FILE"
    rm -f "$PIDS_FILE"
    echo "stopped"
    ;;
*)
    echo "usage: $0 start|stop" >&2; exit 2
    ;;
esac
