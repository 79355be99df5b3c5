#!/bin/sh
# Stage "venv" / "venv-next": build VENV_DIR (venv, venv-next) from wheels/ only (no network)
# for release RELEASE (stage env), then prove that pip check passes and that every WSGI
# module and server the services run imports (the modules that build no app at import).
set -eu
cd "${ENVBUILD_ROOT:?}"
req=${ENVBUILD_INPUTS:?}/requirements/aio-${RELEASE:?}.txt
py=${ENVBUILD_VAR_PYTHON:-/usr/bin/python3}
venv=${VENV_DIR:?}

rm -rf "$venv"
# --copies: the venv holds its own python binary (no link out of the machine, so a cached
# venv can be exported). Console scripts get absolute shebangs and are never used: everything
# runs as `$venv/bin/python -m ...` or through bin/ wrappers (relocatable).
"$py" -m venv --copies "$venv"
# --no-deps: the lock is the full closure (pip check below proves it), and pip's hash mode
# refuses a dependency declared with extras (neutron -> oslo.service[threading]) otherwise.
# The four sdists (ovs, ncclient, pyperclip, simplegeneric) build as pure Python with the
# locked setuptools, offline: install it first, then build without isolation (an isolated
# build would ask the index for its own setuptools).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
grep -A1 '^setuptools==' "$req" >"$tmp/setuptools.txt"
pip_install() {
    "$venv/bin/python" -m pip install --quiet --no-cache-dir --no-index --find-links wheels \
        --require-hashes --no-deps --no-build-isolation --use-pep517 "$@"
}
pip_install -r "$tmp/setuptools.txt"
pip_install -r "$req"
"$venv/bin/python" -m pip check
"$venv/bin/python" -c 'import keystone.server.wsgi, glance.common.wsgi_app, placement.wsgi, nova.api.openstack.wsgi_app, gunicorn, pymysql, pymemcache, memcache
import neutron.server, importlib.util
# The nova 33 service modules pick an oslo.service backend at import (compute: eventlet,
# scheduler: threading): they cannot share one interpreter, so only find them.
assert all(importlib.util.find_spec(f"nova.cmd.{m}") for m in ("compute", "conductor", "scheduler"))
import swift.proxy.server, swift.obj.server, swift.container.server, swift.account.server
import importlib.metadata as m
print(" ".join(f"{d} {m.version(d)}" for d in ("keystone", "glance", "openstack-placement", "nova", "neutron", "swift", "gunicorn")))'
# The downloads are not needed any more: keep them out of this stage's snapshot (and of every
# later one). fetch-next downloads N+1's files itself.
rm -rf wheels
