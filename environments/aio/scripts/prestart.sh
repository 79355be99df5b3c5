#!/bin/sh
# Prestart hook (every `up`, before any service): everything that depends on this up's ports
# and secrets, written to $ENVBUILD_RUN (0600 where a secret is in it), nothing to the stages'
# output but swift's rings are rendered from the builders in swift/:
#   etc/venv[,-next]/...     every OpenStack config, per release (render.py)
#   swift/                   swift.conf, proxy + storage configs, the three rings (ports)
#   haproxy.cfg              the load balancer
#   mysql-init.sql           run by mariadbd at start: the database users' real password, the
#                            keystone users' real password hashes and the catalog's real ports
#   rabbitmq/                RabbitMQ's config (its user and password) and data folders
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "${ENVBUILD_ROOT:?}"
run=${ENVBUILD_RUN:?}
umask 077
for venv in venv venv-next; do
    [ ! -d "$venv" ] || python3 "$here/render.py" openstack "$venv"
done
mkdir -p var/nova/compute1 var/nova/compute2 var/glance
python3 "$here/render.py" swift
python3 "$here/render.py" haproxy
/usr/sbin/haproxy -c -q -f "$run/haproxy.cfg"
PYTHONDONTWRITEBYTECODE=1 venv/bin/python "$here/rings.py" write "$run/swift"

# MariaDB's init file. The keystone password hashes are bcrypt (4 rounds, as keystone.conf's
# password_hash_rounds), computed here with the venv's bcrypt: keystone checks a hash with the
# rounds stored in it. Secrets are [A-Za-z0-9] only: nothing to quote.
PYTHONDONTWRITEBYTECODE=1 venv/bin/python - "$run/mysql-init.sql" <<'PYEOF'
import os, sys
import bcrypt

env = os.environ
db_pw = env["ENVBUILD_SECRET_DB_PASSWORD"]
lines = []
for user in ("keystone", "glance", "placement", "nova", "neutron"):
    for host in ("localhost", "127.0.0.1"):
        lines.append(f"ALTER USER '{user}'@'{host}' IDENTIFIED BY '{db_pw}';")


def set_password(names, password):
    h = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
    where = ", ".join(f"'{n}'" for n in names)
    lines.append("UPDATE keystone.password p JOIN keystone.local_user l ON p.local_user_id = l.id "
                 f"SET p.password_hash = '{h}' WHERE l.domain_id = 'default' AND l.name IN ({where});")


set_password(["admin"], env["ENVBUILD_SECRET_ADMIN_PASSWORD"])
set_password(["glance", "placement", "nova", "neutron", "swift"], env["ENVBUILD_SECRET_SERVICE_PASSWORD"])
for kind, port in (("identity", "KEYSTONE"), ("image", "GLANCE"), ("placement", "PLACEMENT"),
                   ("compute", "NOVA"), ("network", "NEUTRON"), ("object-store", "SWIFT")):
    url = f"http://127.0.0.1:{env['ENVBUILD_PORT_' + port]}"
    lines.append("UPDATE keystone.endpoint e JOIN keystone.service s ON e.service_id = s.id "
                 f"SET e.url = REGEXP_REPLACE(e.url, '^http://127[.]0[.]0[.]1:[0-9]+', '{url}') "
                 f"WHERE s.type = '{kind}';")
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    f.write("\n".join(lines) + "\n")
PYEOF

# RabbitMQ: a fresh node at every up (its data folder is in $ENVBUILD_RUN): the default user
# is created from this config on first start.
mkdir -p "$run/rabbitmq/home" "$run/rabbitmq/mnesia" "$run/rabbitmq/log"
cat >"$run/rabbitmq/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:${ENVBUILD_PORT_AMQP:?}
default_user = openstack
default_pass = ${ENVBUILD_SECRET_RABBIT_PASSWORD:?}
default_vhost = /
loopback_users = none
log.console = true
log.console.level = warning
log.file = false
CONF
echo "[]." >"$run/rabbitmq/enabled_plugins"
: >"$run/rabbitmq/rabbitmq-env.conf"
echo "prestart: configs, rings, haproxy.cfg, mysql-init.sql, rabbitmq in $run"
