#!/bin/sh
# Stage "fetch" / "fetch-next": download the locked files of one release
# (requirements/aio-$RELEASE.txt) into wheels/, so that the venv stages install offline.
# RELEASE: the stage env (e.g. "{{ release }}"). Network: the package index only.
set -eu
cd "${ENVBUILD_ROOT:?}"
req=${ENVBUILD_INPUTS:?}/requirements/aio-${RELEASE:?}.txt
py=${ENVBUILD_VAR_PYTHON:-/usr/bin/python3}

# pip from a throwaway venv outside the machine dir (nothing of it in a snapshot).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
"$py" -m venv "$tmp/venv"
# --no-deps: the lock is the full closure; --require-hashes: exactly the locked files (wheels
# and the few sdists); --no-cache-dir: $HOME is inside the machine dir.
"$tmp/venv/bin/python" -m pip download --quiet --no-cache-dir --no-deps --require-hashes \
    -d wheels -r "$req"
