#!/bin/sh
# Stage "fetch": download the locked wheels for keystone $ENVBUILD_VAR_KEYSTONE_VERSION
# into wheels/, so that the "venv" stage can install fully offline.
set -eu
cd "${ENVBUILD_ROOT:?}"
# KEYSTONE_VERSION (stage env) picks another release than the var: the N+1 stages use it.
req=${ENVBUILD_INPUTS:?}/requirements/keystone-${KEYSTONE_VERSION:-${ENVBUILD_VAR_KEYSTONE_VERSION:?}}.txt
py=${ENVBUILD_VAR_PYTHON:-/usr/bin/python3}

# pip comes from a throwaway venv outside the machine dir: the host python may
# have no pip of its own, and nothing of this helper must end up in a snapshot.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
"$py" -m venv "$tmp/venv"

# --no-deps: the lock file already is the full closure; --require-hashes makes
# pip refuse anything but the exact locked files; --no-cache-dir keeps pip's
# cache out of $HOME (which is inside the machine dir). Files already present
# are re-verified, not re-downloaded, so rerunning is cheap.
"$tmp/venv/bin/python" -m pip download --quiet --no-cache-dir --no-deps \
    --require-hashes --only-binary :all: -d wheels -r "$req"
