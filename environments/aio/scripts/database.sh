#!/bin/sh
# Stage "database": MariaDB's data folder (var/mysql) with every schema of release N synced
# and the cloud's base data: keystone (admin, service users, catalog), nova cells v2 (cell0,
# cell1) and flavors. MariaDB runs privately for the stage (its socket and a free loopback
# port) and is shut down cleanly at the end. Every password in it is a throwaway that is written nowhere:
# prestart.sh sets the real ones at every `up` (mysql-init.sql).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "${ENVBUILD_ROOT:?}"
export AIO_VENV=venv
tmp=$(mktemp -d /tmp/aio-db.XXXXXX)   # short: a socket path has 107 bytes at most
cleanup() {
    [ ! -f "$tmp/pid" ] || sh "$here/mariadb.sh" stop-private "$tmp" || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
umask 077
mkdir -p var/mysql
ENVBUILD_PORT_MYSQL=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export ENVBUILD_PORT_MYSQL
sh "$here/mariadb.sh" start-private "$tmp"

AIO_STAGE_PASSWORD=$(venv/bin/python -c 'import secrets; print(secrets.token_hex(16))')
export AIO_STAGE=1 AIO_STAGE_PASSWORD AIO_STAGE_DB_PASSWORD="$AIO_STAGE_PASSWORD"
# One database user per project; '127.0.0.1' is how the services connect, 'localhost' the
# socket this stage uses. prestart.sh resets both passwords at every up.
{
    for db in keystone glance placement nova_api nova nova_cell0 neutron; do
        echo "CREATE DATABASE IF NOT EXISTS $db CHARACTER SET utf8mb4;"
    done
    for user in keystone glance placement nova neutron; do
        for host in localhost 127.0.0.1; do
            echo "CREATE USER IF NOT EXISTS '$user'@'$host' IDENTIFIED BY '$AIO_STAGE_PASSWORD';"
        done
    done
    for pair in keystone:keystone glance:glance placement:placement nova:nova_api nova:nova \
        nova:nova_cell0 neutron:neutron; do
        for host in localhost 127.0.0.1; do
            echo "GRANT ALL PRIVILEGES ON ${pair#*:}.* TO '${pair%%:*}'@'$host';"
        done
    done
} | mariadb --socket="$tmp/sock"

# The configs of this stage: same templates as at runtime, databases through the socket.
export AIO_RUN="$tmp/run" AIO_CONF="$tmp/run/etc/venv"
python3 "$here/render.py" openstack venv keystone glance placement nova neutron
os=$here/os.sh
py() { PYTHONDONTWRITEBYTECODE=1 venv/bin/python "$@"; }

sh "$os" keystone-manage db_sync
py "$here/keystone-setup.py" "$AIO_CONF/keystone/keystone.conf"
sh "$os" glance-manage db_sync
sh "$os" placement-manage db sync
sh "$os" nova-manage api_db sync
# Cell mappings are stored as templates: nova fills in user, password, host and port from
# the local nova.conf at every use, so the database holds neither a secret nor a port.
sh "$os" nova-manage cell_v2 map_cell0 \
    --database_connection '{scheme}://{username}:{password}@{hostname}:{port}/nova_cell0?{query}'
sh "$os" nova-manage cell_v2 list_cells | grep -q ' cell1 ' || sh "$os" nova-manage cell_v2 create_cell \
    --name cell1 --transport-url '{scheme}://{username}:{password}@{hostname}:{port}/{path}' \
    --database_connection '{scheme}://{username}:{password}@{hostname}:{port}/{path}?{query}'
sh "$os" nova-manage db sync
py "$here/nova-flavors.py" "$AIO_CONF/nova/nova.conf"
sh "$os" neutron-db-manage upgrade heads
sh "$os" nova-manage cell_v2 list_cells
