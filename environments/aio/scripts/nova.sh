#!/bin/sh
# Service: one nova service (foreground): conductor | scheduler [HOST] | compute HOST.
# Records its start time in $ENVBUILD_RUN/started/NAME for ready.py (which waits for the first
# heartbeat after it). AIO_VENV picks the release.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
service=${1:?usage: nova.sh conductor|scheduler [HOST]|compute HOST}
name=nova-$service${2:-}
mkdir -p "${ENVBUILD_RUN:?}/started"
date -u +%s >"$ENVBUILD_RUN/started/$name"
# A second scheduler runs under its own host name (one nova.services row each), from a config
# file that names it.
if [ "$service" = scheduler ] && [ -n "${2:-}" ]; then
    conf=${AIO_CONF:-$ENVBUILD_RUN/etc/${AIO_VENV:-venv}}/nova/$2.conf
    printf '[DEFAULT]\nhost = %s\n' "$2" >"$conf"
    exec sh "$here/os.sh" nova-scheduler --config-file "$conf"
fi
exec sh "$here/os.sh" "nova-$service" ${2:+"$2"}
