#!/bin/sh
# Stage "tempest": download the locked wheels of validation/tempest.txt into
# wheels/ (network: package index only), then build venv-tempest/ from wheels/
# offline. Inputs: validation/tempest.txt, validation/scripts/tempest-install.sh.
# Optional vars: ENVBUILD_VAR_PYTHON (default /usr/bin/python3),
# ENVBUILD_VAR_TEMPEST_VENV (default venv-tempest), ENVBUILD_VAR_WHEELS_DIR
# (default wheels, shared with keystone's fetch stage: the lock's hashes pick
# the right files, PyPI never serves two different files under one name).
set -eu
cd "${ENVBUILD_ROOT:?}"
req=${ENVBUILD_INPUTS:?}/validation/tempest.txt
py=${ENVBUILD_VAR_PYTHON:-/usr/bin/python3}
venv=${ENVBUILD_VAR_TEMPEST_VENV:-venv-tempest}
wheels=${ENVBUILD_VAR_WHEELS_DIR:-wheels}

# 1. fetch, with a pip from a throwaway venv outside the machine dir.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
"$py" -m venv "$tmp/venv"
# --no-deps: the lock is the full closure; --require-hashes: exactly the locked
# files; --no-cache-dir: $HOME is inside the machine dir.
"$tmp/venv/bin/python" -m pip download --quiet --no-cache-dir --no-deps \
    --require-hashes --only-binary :all: -d "$wheels" -r "$req"

# 2. venv, offline. --copies: its own python binary, no link out of the machine.
# Console scripts in $venv/bin get absolute shebangs and are never used: the
# runtime scripts run `$venv/bin/python -m ...` / `-c ...` (relocatable).
rm -rf "$venv"
"$py" -m venv --copies "$venv"
"$venv/bin/python" -m pip install --quiet --no-cache-dir --no-index \
    --find-links "$wheels" --require-hashes --only-binary :all: -r "$req"
"$venv/bin/python" -m pip check
"$venv/bin/python" -c 'import tempest.cmd.main, tempest.api.identity, stestr.cli, subunit'
"$venv/bin/python" -c 'import importlib.metadata as m; print("tempest", m.version("tempest"))'
