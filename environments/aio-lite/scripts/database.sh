#!/bin/sh
# Stage "database": create the schema and the bootstrap data (admin user,
# admin project, roles, RegionOne, identity service + endpoints).
set -eu
cd "${ENVBUILD_ROOT:?}"
bin/keystone-manage db_sync

# Snapshots must hold no secret: bootstrap with a random password that is
# never written anywhere (only its hash lands in the DB). The real password is
# set by prestart.sh at every `up`; so are the real endpoint URLs (port 5000
# here is only a placeholder).
OS_BOOTSTRAP_PASSWORD=$(venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(32))')
export OS_BOOTSTRAP_PASSWORD
url=http://127.0.0.1:5000/v3
bin/keystone-manage bootstrap --bootstrap-region-id RegionOne \
    --bootstrap-public-url "$url" --bootstrap-internal-url "$url" \
    --bootstrap-admin-url "$url"
