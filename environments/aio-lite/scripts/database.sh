#!/bin/sh
# Stage "database": create the schema and the bootstrap data (admin user,
# admin project, roles, RegionOne, identity service + endpoints).
set -eu
cd "${ENVBUILD_ROOT:?}"
umask 077   # the DB holds password hashes: keep it private to the owner
bin/keystone-manage db_sync

# WAL journal (a persistent property of the DB file): in the default rollback
# journal a reader blocks writers, and with 2 x 2 gunicorn workers a wrong
# password (keystone then writes failed_auth_count) hung 5 s on "database is
# locked" and gave HTTP 500 instead of 401. The -wal/-shm files only exist
# while the DB is open, so the snapshot after this stage is just keystone.db.
venv/bin/python -c 'import sqlite3
print("journal_mode:", sqlite3.connect("var/keystone.db").execute("PRAGMA journal_mode=WAL").fetchone()[0])'

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
