#!/bin/sh
# Service: memcached (foreground), keystone's cache, on 127.0.0.1:PORT only, no UDP.
# Usage: sh memcached.sh PORT. Stops on SIGTERM.
set -eu
port=${1:?usage: memcached.sh PORT}
# As root, memcached refuses to start without a user to run as: keep the current one.
set --
[ "$(id -u)" -ne 0 ] || set -- -u "$(id -un)"
exec /usr/bin/memcached "$@" -l 127.0.0.1 -p "$port" -U 0 -m 64 -t 2
