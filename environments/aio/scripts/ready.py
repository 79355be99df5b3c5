"""ready.py nova SERVICE [HOST] — readiness of one nova service (exit 0 ready, 1 not yet).

Ready when its row in nova.services shows a heartbeat later than the start time nova.sh
recorded ($ENVBUILD_RUN/started/nova-SERVICE[HOST]); a compute also needs its host mapping in
nova_api (made by the scheduler's periodic discovery), without which nothing is scheduled to
it, and its node's inventory in placement: a compute new to the database is mapped as soon as
its node's row exists, before it has told placement about the node, and a server created then
finds no allocation candidate (NoValidHost). One check per call (the caller retries); reasons go to $ENVBUILD_RUN/ready.log. Run with
the venv's python (pymysql).
"""
import datetime
import os
import socket
import sys

import pymysql


def main():
    service, host = sys.argv[2], (sys.argv[3] if len(sys.argv) > 3 else None)
    run = os.environ["ENVBUILD_RUN"]
    started = int(open(f"{run}/started/nova-{service}{host or ''}").read())
    started = datetime.datetime.fromtimestamp(started, datetime.timezone.utc).replace(tzinfo=None)
    db = pymysql.connect(host="127.0.0.1", port=int(os.environ["ENVBUILD_PORT_MYSQL"]), user="nova",
                         password=os.environ["ENVBUILD_SECRET_DB_PASSWORD"], connect_timeout=5)
    with db.cursor() as c:
        c.execute("SELECT COALESCE(updated_at, created_at) FROM nova.services WHERE `binary` = %s"
                  " AND host = %s AND deleted = 0", (f"nova-{service}", host or socket.gethostname()))
        row = c.fetchone()
        if not row or row[0] <= started:
            return f"nova-{service} {host or ''}: no heartbeat since its start ({row and row[0]})"
        if host and service == "compute":
            c.execute("SELECT 1 FROM nova_api.host_mappings WHERE host = %s", (host,))
            if not c.fetchone():
                return f"{host}: not mapped to a cell yet"
    if host and service == "compute":
        # The placement user has the same password (one db_password for every project).
        db = pymysql.connect(host="127.0.0.1", port=int(os.environ["ENVBUILD_PORT_MYSQL"]),
                             user="placement", password=os.environ["ENVBUILD_SECRET_DB_PASSWORD"],
                             connect_timeout=5)
        with db.cursor() as c:
            c.execute("SELECT 1 FROM placement.resource_providers rp JOIN placement.inventories i"
                      " ON i.resource_provider_id = rp.id WHERE rp.name = %s LIMIT 1", (host,))
            if not c.fetchone():
                return f"{host}: no inventory in placement yet"
    return None


if __name__ == "__main__":
    try:
        why = main()
    except Exception as e:   # not ready: the database may not answer yet
        why = f"{type(e).__name__}: {e}"
    if why:
        with open(os.path.join(os.environ["ENVBUILD_RUN"], "ready.log"), "a") as f:
            f.write(why + "\n")
    sys.exit(1 if why else 0)
