#!/bin/sh
# Stage "configure": keystone.conf (every path in it relative to the machine
# root), the bin/keystone-manage wrapper, and the fernet + credential keys.
set -eu
cd "${ENVBUILD_ROOT:?}"
mkdir -p etc/keystone var bin
cp "${ENVBUILD_INPUTS:?}/templates/keystone.conf" etc/keystone/keystone.conf

# keystone-manage without its console script (absolute shebang = not
# relocatable). It cd's to the machine root because keystone.conf's paths are
# relative to it. KEYSTONE_VENV picks another venv (upgrade test: venv-next).
cat >bin/keystone-manage <<'WRAP'
#!/bin/sh
# keystone-manage for this machine; see scripts/configure.sh.
set -eu
cd "$(dirname "$0")/.."
exec "${KEYSTONE_VENV:-venv}/bin/python" -c \
    'import sys; sys.argv[0] = "keystone-manage"
from keystone.cmd.manage import main; main()' \
    --config-file etc/keystone/keystone.conf "$@"
WRAP
chmod 755 bin/keystone-manage

# Key repositories (0700 dirs, 0600 keys), owned by whoever runs the services.
# Rerunning keeps existing keys: *_setup only fills an empty repository.
set -- --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
bin/keystone-manage fernet_setup "$@"
bin/keystone-manage credential_setup "$@"
