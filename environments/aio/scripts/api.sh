#!/bin/sh
# Service: one API process (gunicorn, foreground) of PROJECT on 127.0.0.1:PORT, behind HAProxy.
# Usage: sh api.sh keystone|glance|placement|nova|neutron PORT   (cwd = machine root)
# AIO_VENV picks the release (venv = N, venv-next = N+1); its configs are in
# $ENVBUILD_RUN/etc/$AIO_VENV/PROJECT (prestart.sh). SIGTERM: graceful, 5 s at most (the flows
# drain a server in HAProxy before they restart it, so nothing is in flight by then).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "${ENVBUILD_ROOT:?}"
project=${1:?usage: api.sh PROJECT PORT}
port=${2:?usage: api.sh PROJECT PORT}
venv=${AIO_VENV:-venv}
conf=${ENVBUILD_RUN:?}/etc/$venv
case $project in
    keystone) app=keystone.wsgi.api; export OS_KEYSTONE_CONFIG_DIR="$conf/keystone" ;;
    glance) app=glance.wsgi.api; export OS_GLANCE_CONFIG_DIR="$conf/glance" ;;
    placement) app=placement.wsgi.api; export OS_PLACEMENT_CONFIG_DIR="$conf/placement" ;;
    # nova reads api-paste.ini and nova.conf from the folder (its default file list).
    # Native threads, not eventlet: a monkey-patched worker under gthread hangs (WORKER TIMEOUT).
    nova) app=nova.wsgi.osapi_compute; export OS_NOVA_CONFIG_DIR="$conf/nova" OS_NOVA_DISABLE_EVENTLET_PATCHING=true ;;
    neutron) app=neutron.wsgi.api; export OS_NEUTRON_CONFIG_DIR="$conf/neutron" ;;
    *) echo "api.sh: unknown project $project" >&2; exit 2 ;;
esac
export AIO_WSGI_APP=$app PYTHONDONTWRITEBYTECODE=1
# gunicorn >= 25.1 opens a control socket under $HOME (inside the machine dir, shared by every
# API process): off.
set --
if "$venv/bin/python" -c 'import sys, gunicorn; sys.exit(gunicorn.version_info < (25, 1))'; then
    set -- --no-control-socket
fi
# One worker with 4 threads per process (two processes per API): 10 API processes fit in a
# small memory budget, and a slow request (a server create waits on placement, glance and
# neutron) does not block the others.
exec "$venv/bin/python" -m gunicorn "$@" --bind "127.0.0.1:$port" --worker-class gthread \
    --workers 1 --threads 4 --timeout 120 --graceful-timeout 5 --name "$project-$port" \
    --pythonpath "$here" aio_wsgi:application
