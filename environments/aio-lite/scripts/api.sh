#!/bin/sh
# Service: one keystone API (gunicorn, foreground) on 127.0.0.1:$1.
# Usage: sh api.sh "$ENVBUILD_PORT_API1"   (cwd = machine root)
# Stops on SIGTERM (graceful, up to --graceful-timeout) or SIGQUIT/SIGINT (fast).
set -eu
here=$(cd "$(dirname "$0")" && pwd)   # before the cd: $0 may be relative
cd "${ENVBUILD_ROOT:?}"
port=${1:?usage: api.sh PORT}
venv=${KEYSTONE_VENV:-venv}

# keystone's WSGI app reads $OS_KEYSTONE_CONFIG_DIR/keystone.conf (relative to
# the cwd, the machine root, like every path inside keystone.conf), then the
# runtime part prestart.sh rendered (the cache on this up's memcached).
run=${ENVBUILD_RUN:?}
OS_KEYSTONE_CONFIG_DIR=etc/keystone
OS_KEYSTONE_CONFIG_FILES="keystone.conf;$run/keystone-runtime.conf"
# Write no .pyc at run time: keystone_wsgi.py's dir may be the inputs or the
# machine dir (the venv's .pyc files were all written at install time).
PYTHONDONTWRITEBYTECODE=1
export OS_KEYSTONE_CONFIG_DIR OS_KEYSTONE_CONFIG_FILES PYTHONDONTWRITEBYTECODE

# Each worker that has loaded keystone leaves its pid in $AIO_API_READY
# (gunicorn_conf.py), so api-ready.sh can hold traffic back until all have.
workers=2
AIO_API_READY=$run/api-$port.workers
rm -rf "$AIO_API_READY" && mkdir -p "$AIO_API_READY"
echo "$workers" >"$AIO_API_READY/expected"
export AIO_API_READY

# gunicorn >= 25.1 opens a control socket under $HOME by default, and $HOME is
# inside the machine dir (and shared by both API instances): switch it off.
set --
if "$venv/bin/python" -c 'import sys, gunicorn; sys.exit(gunicorn.version_info < (25, 1))'; then
    set -- --no-control-socket
fi

# 2 sync workers per instance: 2 instances x 2 = 4 processes for 2 cores;
# requests are short and mostly CPU (SQLAlchemy, fernet). No --preload: each
# worker builds its own app and DB engine after the fork.
# --graceful-timeout: on SIGTERM a worker finishes what it serves; the upgrade
# drains NGINX first, so nothing should be left (docs/aio-lite.md).
# The app is keystone.wsgi.api:application, loaded via keystone_wsgi.py (next
# to this script), which hides gunicorn's argv from keystone's config parser.
exec "$venv/bin/python" -m gunicorn "$@" -c "$here/gunicorn_conf.py" \
    --bind "127.0.0.1:$port" --workers "$workers" --timeout 60 --graceful-timeout 30 \
    --pythonpath "$here" keystone_wsgi:application
