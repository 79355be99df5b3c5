#!/bin/sh
# Stage "venv": build venv/ from wheels/ only (no network), then prove that
# keystone's WSGI app module and gunicorn import.
# Optional VENV_DIR (stage env, default venv): the upgrade test builds the
# N+1 code into venv-next next to venv (wheels/ can hold both versions: the
# lock file's pins + hashes pick the right files).
set -eu
cd "${ENVBUILD_ROOT:?}"
# KEYSTONE_VERSION (stage env) picks another release than the var: the N+1 stages use it.
req=${ENVBUILD_INPUTS:?}/requirements/keystone-${KEYSTONE_VERSION:-${ENVBUILD_VAR_KEYSTONE_VERSION:?}}.txt
py=${ENVBUILD_VAR_PYTHON:-/usr/bin/python3}
venv=${VENV_DIR:-venv}

# Start clean so a rerun never mixes two versions. The venv survives being moved
# (pyvenv.cfg points at the host python's folder, not at the venv); its console
# scripts (absolute shebangs) do not and are never used: run `venv/bin/python -m ...`.
rm -rf "$venv"
# --copies: the venv holds its own python binary instead of a link to /usr/bin, so a cached
# venv can be exported to another machine (links out of the machine are refused there).
"$py" -m venv --copies "$venv"
"$venv/bin/python" -m pip install --quiet --no-cache-dir --no-index --find-links wheels \
    --require-hashes --only-binary :all: -r "$req"
"$venv/bin/python" -m pip check
"$venv/bin/python" -c 'import keystone.server.wsgi, gunicorn'
