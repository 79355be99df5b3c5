"""keystone-setup.py KEYSTONE_CONF — the identity data of the aio cloud, written in-process
with keystone's own code (the database stage; run with the venv's python, cwd = root).

Bootstraps admin (project admin, roles, RegionOne, keystone's endpoints) as `keystone-manage
bootstrap` does, then a `service` project, one service user per project (admin and service
roles on it), swift's ResellerAdmin role, the services and their public + internal endpoints. Every password here is a
throwaway (AIO_STAGE_PASSWORD): prestart.sh sets the real ones, and the real endpoint ports,
at every `up` (a stage's output is cached and shared, so it holds no secret). URLs name port
1 until then. Idempotent: existing objects are kept.
"""
import os
import sys
import uuid

import keystone.conf
from keystone.cmd import bootstrap
from keystone.common import provider_api
from keystone import exception

CONF = keystone.conf.CONF
PROVIDERS = provider_api.ProviderAPIs
PASSWORD = os.environ["AIO_STAGE_PASSWORD"]
# type, name, path after http://127.0.0.1:PORT (prestart.sh fills in the port)
SERVICES = [
    ("image", "glance", ""),
    ("placement", "placement", ""),
    ("compute", "nova", "/v2.1"),
    ("network", "neutron", ""),
    ("object-store", "swift", "/v1/AUTH_%(project_id)s"),
]
USERS = ["glance", "placement", "nova", "neutron", "swift"]


def main():
    keystone.conf.configure()
    CONF(args=[], project="keystone", default_config_files=[sys.argv[1]])
    domain = CONF.identity.default_domain_id
    b = bootstrap.Bootstrapper()
    # The admin project gets a fixed id (the var admin_project_id): the spec's swift probes
    # address its account (AUTH_<id>) before any token exists. Bootstrap then finds it by name.
    b._bootstrap_default_domain()
    admin_id = os.environ["ADMIN_PROJECT_ID"]
    try:
        PROVIDERS.resource_api.get_project(admin_id)
    except exception.ProjectNotFound:
        PROVIDERS.resource_api.create_project(admin_id, {
            "id": admin_id, "name": "admin", "domain_id": domain, "description": "Bootstrap project",
            "enabled": True, "parent_id": domain, "is_domain": False})
    b.admin_username, b.admin_password = "admin", PASSWORD
    b.project_name, b.admin_role_name = "admin", "admin"
    b.region_id, b.service_name = "RegionOne", "keystone"
    b.public_url = b.internal_url = "http://127.0.0.1:1/v3"
    b.immutable_roles = True          # as keystone-manage bootstrap does by default
    b.bootstrap()

    try:
        project = PROVIDERS.resource_api.get_project_by_name("service", domain)
    except exception.ProjectNotFound:
        pid = uuid.uuid4().hex
        project = PROVIDERS.resource_api.create_project(pid, {
            "id": pid, "name": "service", "domain_id": domain, "description": "service users",
            "enabled": True, "parent_id": domain, "is_domain": False})
    roles = [b.admin_role_id, b.service_role_id]
    for name in USERS:
        try:
            user = PROVIDERS.identity_api.get_user_by_name(name, domain)
        except exception.UserNotFound:
            user = PROVIDERS.identity_api.create_user({
                "name": name, "domain_id": domain, "password": PASSWORD, "enabled": True})
        for role in roles:
            try:
                PROVIDERS.assignment_api.create_grant(role, user_id=user["id"], project_id=project["id"])
            except exception.Conflict:
                pass
    # swift's reseller admin (keystoneauth reseller_admin_role; Tempest's account quota tests).
    if not [r for r in PROVIDERS.role_api.list_roles() if r["name"] == "ResellerAdmin"]:
        rid = uuid.uuid4().hex
        PROVIDERS.role_api.create_role(rid, {"id": rid, "name": "ResellerAdmin", "domain_id": None})
    have = {s["type"] for s in PROVIDERS.catalog_api.list_services()}
    for kind, name, path in SERVICES:
        if kind in have:
            continue
        sid = uuid.uuid4().hex
        PROVIDERS.catalog_api.create_service(sid, {"id": sid, "type": kind, "name": name, "enabled": True})
        for interface in ("public", "internal"):
            eid = uuid.uuid4().hex
            PROVIDERS.catalog_api.create_endpoint(eid, {
                "id": eid, "service_id": sid, "interface": interface, "region_id": "RegionOne",
                "url": f"http://127.0.0.1:1{path}", "enabled": True})
    print(f"keystone-setup: admin, service project, users {', '.join(USERS)}, "
          f"{len(SERVICES) + 1} services")


if __name__ == "__main__":
    main()
