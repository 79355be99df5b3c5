"""keystone-leftovers.py [--delete] PREFIX... | --check — find (and delete) test leftovers.

Lists the users, groups, projects, roles, domains, services and regions of
aio's keystone whose name (regions: id) starts with one of the PREFIXes,
deletes them with --delete (domains are disabled first), and prints one JSON
object: {"found": {kind: n}, "deleted": {kind: n}, "errors": [...], "users_total": n}.
Standard library only (runs under any venv's python or /usr/bin/python3).
Needs ENVBUILD_PORT_KEYSTONE and ENVBUILD_SECRET_ADMIN_PASSWORD (admin, project
admin, domain Default, as `envbuild creds aio`). Exit 0 unless a request failed.
--check only gets an admin token: exit 0, or 2 with a one-line reason (the
runtime scripts' preflight).
"""
import json
import os
import sys
import urllib.error
import urllib.request

args = sys.argv[1:]
check = args == ["--check"]
delete = "--delete" in args
prefixes = tuple(a for a in args if a != "--delete")
if not prefixes:
    sys.exit("usage: keystone-leftovers.py [--delete] PREFIX... | --check")
base = "http://127.0.0.1:%s/v3" % os.environ["ENVBUILD_PORT_KEYSTONE"]


def call(method, path, body=None, token=None):
    req = urllib.request.Request(base + path, method=method,
                                 data=json.dumps(body).encode() if body else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    with urllib.request.urlopen(req, timeout=30) as r:
        data = r.read()
        return r.headers, json.loads(data) if data else None


auth = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
    "name": "admin", "domain": {"name": "Default"},
    "password": os.environ["ENVBUILD_SECRET_ADMIN_PASSWORD"]}}},
    "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}}
try:
    headers, _ = call("POST", "/auth/tokens", auth)
except (urllib.error.URLError, OSError) as e:
    print("cannot get an admin token from %s: %s" % (base, getattr(e, "reason", e)),
          file=sys.stderr)
    sys.exit(2)
token = headers["X-Subject-Token"]
if check:
    sys.exit(0)

# Order matters for deletion: users and groups before projects, domains last.
kinds = [("users", "name"), ("groups", "name"), ("projects", "name"),
         ("roles", "name"), ("services", "name"), ("regions", "id"),
         ("domains", "name")]
found, deleted, errors, users_total = {}, {}, [], 0
for kind, key in kinds:
    _, body = call("GET", "/" + kind, token=token)
    items = body[kind]
    if kind == "users":
        users_total = len(items)
    if kind == "services":      # services may have no name: use type too
        items = [dict(i, name=i.get("name") or "") for i in items]
    hits = [i for i in items if str(i.get(key, "")).startswith(prefixes)]
    found[kind] = len(hits)
    deleted[kind] = 0
    for i in hits if delete else []:
        try:
            if kind == "domains" and i.get("enabled"):
                call("PATCH", "/domains/" + i["id"], {"domain": {"enabled": False}}, token)
            call("DELETE", "/%s/%s" % (kind, i["id"]), token=token)
            deleted[kind] += 1
        except urllib.error.HTTPError as e:
            if e.code != 404:   # gone meanwhile (e.g. a project's users) is fine
                errors.append("%s %s: HTTP %s" % (kind, i.get(key), e.code))
print(json.dumps({"found": found, "deleted": deleted, "errors": errors,
                  "users_total": users_total}))
sys.exit(1 if errors else 0)
