#!/usr/bin/env python3
"""Renders the aio environment's configuration files from ../templates (placeholders @NAME@).

Usage (cwd or ENVBUILD_ROOT = the machine root; stdlib only):
  render.py openstack VENV [PROJECT...]
                             $AIO_RUN/etc/VENV/{keystone,glance,placement,nova,neutron}/ (and
                             nova/computeN.conf for PROJECT nova-compute): the
                             service configs plus the paste files of that venv's release (only
                             the PROJECTs named, if any: a stage takes only their templates)
  render.py swift            $AIO_RUN/swift/: swift.conf, proxy-server-{1,2}.conf,
                             {account,container,object}-server-{1,2,3}.conf
  render.py haproxy          $AIO_RUN/haproxy.cfg
AIO_RUN defaults to ENVBUILD_RUN. Values come from the runtime environment: ENVBUILD_PORT_*,
ENVBUILD_SECRET_* (0600 files, never argv). A stage (no ports, no secrets) sets AIO_STAGE=1
and AIO_STAGE_DB_PASSWORD instead: the databases are then reached on ENVBUILD_PORT_MYSQL (the
stage's private MariaDB) with that throwaway password, and every other port is a dummy.
An unknown placeholder is an error naming the template and line.
"""
import os
import pwd
import re
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.join(HERE, "..", "templates")
ROOT = os.environ.get("ENVBUILD_ROOT") or os.getcwd()
RUN = os.environ.get("AIO_RUN") or os.environ["ENVBUILD_RUN"]
STAGE = os.environ.get("AIO_STAGE") == "1"

# The APIs behind HAProxy: name -> (health check path, servers). Servers are port names.
APIS = {
    "keystone": ("/v3", ["keystone_api1", "keystone_api2"]),
    "glance": ("/", ["glance_api1", "glance_api2"]),
    "placement": ("/", ["placement_api1", "placement_api2"]),
    "nova": ("/", ["nova_api1", "nova_api2"]),
    "neutron": ("/", ["neutron_api1", "neutron_api2"]),
    "swift": ("/healthcheck", ["swift_proxy1", "swift_proxy2"]),
}
DATABASES = {"keystone": "keystone", "glance": "glance", "placement": "placement",
             "nova_api": "nova", "nova": "nova", "nova_cell0": "nova", "neutron": "neutron"}


def port(name):
    value = os.environ.get(f"ENVBUILD_PORT_{name.upper()}")
    if value:
        return value
    if STAGE:
        return "1"          # a stage starts nothing that listens
    sys.exit(f"render.py: ENVBUILD_PORT_{name.upper()} is not set")


def secret(name):
    value = os.environ.get(f"ENVBUILD_SECRET_{name.upper()}")
    if value:
        return value
    if STAGE:
        return os.environ["AIO_STAGE_DB_PASSWORD"] if name == "db_password" else "stage-only"
    sys.exit(f"render.py: ENVBUILD_SECRET_{name.upper()} is not set")


def db_url(database):
    user = DATABASES[database]
    return (f"mysql+pymysql://{user}:{secret('db_password')}@127.0.0.1:{port('mysql')}/{database}"
            "?charset=utf8mb4")


def url(api):
    return f"http://127.0.0.1:{port(api)}"


def keystoneauth(user):
    """The options of a keystoneauth password plugin for service user `user`."""
    return "\n".join([
        "auth_type = password",
        f"auth_url = {url('keystone')}/v3",
        "user_domain_name = Default",
        "project_domain_name = Default",
        "project_name = service",
        f"username = {user}",
        f"password = {secret('service_password')}",
        "region_name = RegionOne",
    ])


def authtoken(user):
    return "\n".join([
        f"www_authenticate_uri = {url('keystone')}/v3",
        keystoneauth(user),
        f"memcached_servers = 127.0.0.1:{port('memcached')}",
        "service_token_roles_required = true",
    ])


def values(**extra):
    v = {
        "ROOT": ROOT, "RUN": RUN, "USER": pwd.getpwuid(os.getuid()).pw_name,
        "MEMCACHED": f"127.0.0.1:{port('memcached')}",
        "TRANSPORT_URL": f"rabbit://openstack:{secret('rabbit_password')}@127.0.0.1:{port('amqp')}/",
        "URL_GLANCE": url("glance"),
        # A stage runs no memcached.
        "CACHE": "false" if STAGE else "true",
        "SWIFT_HASH": secret("swift_hash") if not STAGE else "stage-only",
    }
    for db in DATABASES:
        v[f"DB_{db.upper()}"] = db_url(db)
    v.update(extra)
    return v


def render(template, dest, vals):
    out = []
    for n, line in enumerate(open(os.path.join(TEMPLATES, template)), 1):
        def sub(m):
            name, _, arg = m.group(1).partition(" ")
            if name == "AUTHTOKEN" and arg:
                return authtoken(arg)
            if name == "KEYSTONEAUTH" and arg:
                return keystoneauth(arg)
            if name in vals and not arg:
                return vals[name]
            sys.exit(f"render.py: templates/{template}:{n}: unknown placeholder @{m.group(1)}@")
        out.append(re.sub(r"@([A-Z_0-9]+(?: [a-z]+)?)@", sub, line))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)   # they hold passwords
    with os.fdopen(fd, "w") as f:
        f.write("".join(out))


def openstack(venv, projects):
    conf = os.path.join(RUN, "etc", venv)
    vals = values(CONF=conf)
    etc = os.path.join(ROOT, venv, "etc")
    projects = projects or ["keystone", "glance", "placement", "nova", "nova-compute", "neutron"]
    if "keystone" in projects:
        render("keystone.conf", f"{conf}/keystone/keystone.conf", vals)
    if "glance" in projects:
        render("glance-api.conf", f"{conf}/glance/glance-api.conf", vals)
        shutil.copy(f"{etc}/glance/glance-api-paste.ini", f"{conf}/glance/glance-api-paste.ini")
    if "placement" in projects:
        render("placement.conf", f"{conf}/placement/placement.conf", vals)
    if "nova" in projects:
        render("nova.conf", f"{conf}/nova/nova.conf", vals)
        shutil.copy(f"{etc}/nova/api-paste.ini", f"{conf}/nova/api-paste.ini")
    if "nova-compute" in projects:
        for host in ("compute1", "compute2"):
            render("nova-compute.conf", f"{conf}/nova/{host}.conf", values(HOST=host))
    if "neutron" in projects:
        render("neutron.conf", f"{conf}/neutron/neutron.conf", vals)
        render("ml2_conf.ini", f"{conf}/neutron/plugins/ml2/ml2_conf.ini", vals)
        shutil.copy(f"{etc}/neutron/api-paste.ini", f"{conf}/neutron/api-paste.ini")
    for d in ("glance", "nova", "neutron"):
        os.makedirs(os.path.join(RUN, "lock", d), exist_ok=True)


def swift():
    conf = os.path.join(RUN, "swift")
    render("swift.conf", f"{conf}/swift.conf", values())
    for i in (1, 2):
        render("proxy-server.conf", f"{conf}/proxy-server-{i}.conf",
               values(PORT=port(f"swift_proxy{i}"), NAME=f"proxy-{i}"))
    for kind in ("account", "container", "object"):
        for node in (1, 2, 3):
            render("storage-server.conf", f"{conf}/{kind}-server-{node}.conf",
                   values(KIND=kind, NODE=str(node), PORT=port(f"swift_{kind}{node}")))
    os.makedirs(os.path.join(RUN, "swift-recon"), exist_ok=True)


def haproxy():
    blocks = []
    for api, (check, servers) in APIS.items():
        # A gunicorn API process has 4 threads: at most 3 requests at once, the rest wait in
        # HAProxy's queue, so a saturated process still answers its health checks on the
        # fourth instead of being marked down together with its twin (20 Hz of nova servers
        # lists on a loaded host left nova-api down for good). swift's eventlet proxies have
        # no such bound.
        limit = "" if api == "swift" else " maxconn 3"
        blocks.append(f"frontend {api}\n    bind 127.0.0.1:{port(api)}\n    default_backend {api}\n"
                      f"backend {api}\n    balance roundrobin\n"
                      f"    option httpchk GET {check}\n    http-check expect rstatus ^[23]\n"
                      + "".join(f"    server {s} 127.0.0.1:{port(s)} check{limit}\n" for s in servers))
    render("haproxy.cfg", os.path.join(RUN, "haproxy.cfg"), values(BACKENDS="\n".join(blocks)))


def main():
    args = sys.argv[1:]
    if args[:1] == ["openstack"] and len(args) >= 2:
        openstack(args[1], args[2:])
    elif args == ["swift"]:
        swift()
    elif args == ["haproxy"]:
        haproxy()
    else:
        sys.exit("usage: render.py openstack VENV [PROJECT...] | swift | haproxy")


if __name__ == "__main__":
    main()
