#!/bin/sh
# Stage "keys": keystone's fernet and credential key repositories (etc/keystone/, 0700/0600),
# shared by both releases. Rerunning keeps existing keys.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "${ENVBUILD_ROOT:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export AIO_RUN="$tmp" AIO_CONF="$tmp/etc/venv" AIO_STAGE=1 AIO_STAGE_DB_PASSWORD=none
python3 "$here/render.py" openstack venv keystone
mkdir -p etc/keystone
set -- --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
sh "$here/os.sh" keystone-manage fernet_setup "$@"
sh "$here/os.sh" keystone-manage credential_setup "$@"
