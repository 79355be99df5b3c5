#!/bin/sh
# Stage "tempest" or "rally": download the locked wheels of validation/TOOL.txt
# into wheels/ (network: package index only), then build venv-TOOL/ from wheels/
# offline and prove the tool imports.
# Usage: sh install-tool.sh tempest|rally
# Inputs: validation/TOOL.txt, validation/scripts/install-tool.sh.
# Optional vars: ENVBUILD_VAR_PYTHON (default /usr/bin/python3),
# ENVBUILD_VAR_WHEELS_DIR (default wheels, shared with keystone's fetch stage:
# the lock's hashes pick the right files, PyPI never serves two different files
# under one name). VENV (stage env) overrides the venv folder (default venv-TOOL).
set -eu
tool=${1:?usage: install-tool.sh tempest|rally}
case $tool in
    tempest)
        imports='import tempest.cmd.main, tempest.api.identity, stestr.cli, subunit'
        dists='tempest' ;;
    rally)
        imports='import rally.cli.main, rally_openstack.task.scenarios.keystone.basic'
        dists='rally rally-openstack' ;;
    *) echo "install-tool.sh: unknown tool $tool (tempest or rally)" >&2; exit 2 ;;
esac
cd "${ENVBUILD_ROOT:?}"
req=${ENVBUILD_INPUTS:?}/validation/$tool.txt
py=${ENVBUILD_VAR_PYTHON:-/usr/bin/python3}
venv=${VENV:-venv-$tool}
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
"$venv/bin/python" -c "$imports"
for dist in $dists; do
    "$venv/bin/python" -c "import importlib.metadata as m, sys; print(sys.argv[1], m.version(sys.argv[1]))" "$dist"
done
