#!/bin/sh
# Service: one nova service (foreground): conductor | scheduler | compute HOST.
# Records its start time in $ENVBUILD_RUN/started/NAME for ready.py (which waits for the first
# heartbeat after it). AIO_VENV picks the release.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
service=${1:?usage: nova.sh conductor|scheduler|compute HOST}
name=nova-$service${2:-}
mkdir -p "${ENVBUILD_RUN:?}/started"
date -u +%s >"$ENVBUILD_RUN/started/$name"
exec sh "$here/os.sh" "nova-$service" ${2:+"$2"}
