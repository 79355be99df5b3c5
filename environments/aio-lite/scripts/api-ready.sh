#!/bin/sh
# Readiness of one keystone API (scripts/api.sh PORT): every gunicorn worker has
# loaded keystone, and a token is issued by this API itself, which also warms
# the path the probes take (DB, fernet keys, policy, cache). Until then NGINX
# does not get it back (the upgrade's `enable` comes after this).
# Usage: sh api-ready.sh PORT   (cwd = machine root); exit 0 when ready.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
port=${1:?usage: api-ready.sh PORT}
ready=${ENVBUILD_RUN:?}/api-$port.workers
expected=$(cat "$ready/expected" 2>/dev/null) || { echo "api-ready: api.sh has not started" >&2; exit 1; }
loaded=0
for marker in "$ready"/*; do
    pid=${marker##*/}
    case $pid in *[!0-9]* | '') continue ;; esac
    ! kill -0 "$pid" 2>/dev/null || loaded=$((loaded + 1))
done
[ "$loaded" -ge "$expected" ] || { echo "api-ready: $loaded of $expected workers loaded" >&2; exit 1; }
exec python3 "$here/check-token.py" "http://127.0.0.1:$port/v3" >/dev/null
