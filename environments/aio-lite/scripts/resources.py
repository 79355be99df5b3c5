#!/usr/bin/env python3
"""Persistent resources that must survive the upgrade (the seed's "persistent resources").

Usage: resources.py create|verify|cleanup
  create   a domain, a project in it, a user with a member role on the project, and an
           application credential of that user; remembers them in $ENVBUILD_OUT/resources.json
  verify   each still exists, the role assignment holds, and the application credential
           still authenticates (a token is issued with it)
  cleanup  deletes them all (the domain last, disabled first as keystone requires)
Each command writes {"resources": [{"resource", "ok", "detail"}]} to $ENVBUILD_RESULT and exits
1 if any check failed. Admin credentials come from the environment (never argv):
ENVBUILD_PORT_PUBLIC, ENVBUILD_SECRET_ADMIN_PASSWORD. Python 3 stdlib only.
"""
import json
import os
import secrets
import sys
import urllib.error
import urllib.request

BASE = f"http://127.0.0.1:{os.environ['ENVBUILD_PORT_PUBLIC']}/v3"
STATE = os.path.join(os.environ["ENVBUILD_OUT"], "resources.json")


def call(method, path, token=None, body=None, expect=(200, 201, 204)):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
            return resp.status, resp.headers, (json.loads(raw) if raw else {})
    except urllib.error.HTTPError as e:
        if e.code in expect:
            return e.code, e.headers, {}
        raise RuntimeError(f"{method} {path}: HTTP {e.code} {e.read()[:200]!r}") from None


def password_token(user, password, domain, project=None, project_domain=None):
    auth = {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"name": domain}, "password": password}}}}
    if project:
        auth["scope"] = {"project": {"name": project, "domain": {"name": project_domain or domain}}}
    _, headers, _ = call("POST", "/auth/tokens", body={"auth": auth})
    return headers["X-Subject-Token"]


def admin_token():
    return password_token("admin", os.environ["ENVBUILD_SECRET_ADMIN_PASSWORD"], "Default", "admin", "Default")


def create(results):
    admin = admin_token()
    suffix = secrets.token_hex(4)
    state = {}
    _, _, d = call("POST", "/domains", admin, {"domain": {"name": f"eb-upgrade-{suffix}"}})
    state["domain"] = {"id": d["domain"]["id"], "name": d["domain"]["name"]}
    _, _, p = call("POST", "/projects", admin, {"project": {"name": "eb-project", "domain_id": state["domain"]["id"]}})
    state["project"] = {"id": p["project"]["id"], "name": "eb-project"}
    password = secrets.token_urlsafe(24)
    _, _, u = call("POST", "/users", admin, {"user": {"name": "eb-user", "domain_id": state["domain"]["id"], "password": password}})
    state["user"] = {"id": u["user"]["id"], "name": "eb-user", "password": password}
    _, _, roles = call("GET", "/roles?name=member", admin)
    role = roles["roles"][0]["id"]
    call("PUT", f"/projects/{state['project']['id']}/users/{state['user']['id']}/roles/{role}", admin)
    state["role"] = {"id": role, "name": "member"}
    user_token = password_token("eb-user", password, state["domain"]["name"], "eb-project")
    _, _, ac = call("POST", f"/users/{state['user']['id']}/application_credentials", user_token,
                    {"application_credential": {"name": f"eb-appcred-{suffix}"}})
    state["application_credential"] = {"id": ac["application_credential"]["id"], "secret": ac["application_credential"]["secret"]}
    with open(STATE, "w") as f:
        json.dump(state, f)
    os.chmod(STATE, 0o600)
    for kind in ("domain", "project", "user", "role", "application_credential"):
        results.append({"resource": kind, "ok": True, "detail": f"created {state[kind].get('name', state[kind]['id'])}"})


def verify(results):
    with open(STATE) as f:
        state = json.load(f)
    admin = admin_token()

    def check(kind, fn):
        try:
            detail = fn()
            results.append({"resource": kind, "ok": True, "detail": detail})
        except Exception as e:  # a failed check is a result, not a crash
            results.append({"resource": kind, "ok": False, "detail": str(e)})

    check("domain", lambda: call("GET", f"/domains/{state['domain']['id']}", admin)[2]["domain"]["name"])
    check("project", lambda: call("GET", f"/projects/{state['project']['id']}", admin)[2]["project"]["name"])
    check("user", lambda: call("GET", f"/users/{state['user']['id']}", admin)[2]["user"]["name"])
    check("role", lambda: (call("HEAD", f"/projects/{state['project']['id']}/users/{state['user']['id']}/roles/{state['role']['id']}", admin), "member on project")[1])
    check("user-password", lambda: (password_token("eb-user", state["user"]["password"], state["domain"]["name"], "eb-project"), "authenticates")[1])
    ac = state["application_credential"]

    def app_cred():
        body = {"auth": {"identity": {"methods": ["application_credential"],
                                      "application_credential": {"id": ac["id"], "secret": ac["secret"]}}}}
        status, headers, _ = call("POST", "/auth/tokens", body=body)
        if status != 201 or not headers.get("X-Subject-Token"):
            raise RuntimeError(f"application credential refused: HTTP {status}")
        return "authenticates"

    check("application_credential", app_cred)


def cleanup(results):
    if not os.path.exists(STATE):
        results.append({"resource": "all", "ok": True, "detail": "nothing was created"})
        return
    with open(STATE) as f:
        state = json.load(f)
    admin = admin_token()
    steps = [
        ("application_credential", "DELETE", f"/users/{state['user']['id']}/application_credentials/{state['application_credential']['id']}", None),
        ("user", "DELETE", f"/users/{state['user']['id']}", None),
        ("project", "DELETE", f"/projects/{state['project']['id']}", None),
        ("domain", "PATCH", f"/domains/{state['domain']['id']}", {"domain": {"enabled": False}}),
        ("domain", "DELETE", f"/domains/{state['domain']['id']}", None),
    ]
    for kind, method, path, body in steps:
        try:
            call(method, path, admin, body, expect=(200, 204, 404))
            if method == "DELETE":
                results.append({"resource": kind, "ok": True, "detail": "deleted"})
        except Exception as e:
            results.append({"resource": kind, "ok": False, "detail": str(e)})
    os.remove(STATE)


def main():
    action = sys.argv[1] if len(sys.argv) == 2 else ""
    if action not in ("create", "verify", "cleanup"):
        sys.exit("usage: resources.py create|verify|cleanup")
    results = []
    try:
        {"create": create, "verify": verify, "cleanup": cleanup}[action](results)
    except Exception as e:
        results.append({"resource": action, "ok": False, "detail": str(e)})
    os.makedirs(os.path.dirname(os.environ["ENVBUILD_RESULT"]), exist_ok=True)
    with open(os.environ["ENVBUILD_RESULT"], "w") as f:
        json.dump({"resources": results}, f)
    for r in results:
        print(("ok   " if r["ok"] else "FAIL ") + f"{r['resource']}: {r['detail']}")
    sys.exit(0 if all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    main()
