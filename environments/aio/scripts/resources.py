#!/usr/bin/env python3
"""Persistent resources that must survive the upgrade (the seed's "persistent resources"), and
the cloud's shared test image.

Usage: resources.py setup|create|verify|cleanup
  setup    uploads the tiny test image "aio-tiny" (raw, 64 KiB) that the probes, Tempest and
           Rally boot servers from, unless it exists (public, never deleted by the flows)
  create   keystone: a project, a user with the member role on it, an application credential
           of that user; glance: an image of 1 MiB of random bytes (its sha256 kept); neutron:
           a network; nova: a server (networks none, flavor m1.nano) waited ACTIVE; swift: a
           container with an object of random bytes (its sha256 kept).
           Remembered in $ENVBUILD_OUT/resources.json (0600: it holds the user's password and
           the credential's secret)
  verify   the credential and the password still authenticate, the image downloads with the
           same checksum, the network is there, the server is ACTIVE, the object reads back
           equal
  cleanup  deletes them all (the server waited gone)
Each command writes {"resources": [{"resource", "ok", "detail"}]} to $ENVBUILD_RESULT (when
set) and exits 1 if any check failed. Stdlib only (aio_client.py).
"""
import hashlib
import json
import os
import secrets
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aio_client as c  # noqa: E402

STATE = os.path.join(os.environ.get("ENVBUILD_OUT", os.environ.get("ENVBUILD_RUN", ".")), "resources.json")
TINY = "aio-tiny"


def upload_image(tok, name, data, visibility="private"):
    _, _, img = c.request("POST", c.base("glance") + "/v2/images", tok, body={
        "name": name, "disk_format": "raw", "container_format": "bare", "visibility": visibility})
    c.request("PUT", f"{c.base('glance')}/v2/images/{img['id']}/file", tok, raw=data,
              headers={"Content-Type": "application/octet-stream"})
    return img["id"]


def setup(results):
    tok, _ = c.token()
    image = c.find_image(tok, TINY)
    if image:
        results.append({"resource": "image aio-tiny", "ok": True, "detail": f"exists: {image}"})
        return
    image = upload_image(tok, TINY, os.urandom(65536), "public")
    results.append({"resource": "image aio-tiny", "ok": True, "detail": f"uploaded {image}"})


def create(results):
    tok, body = c.token()
    ks = c.base("keystone") + "/v3"
    suffix = secrets.token_hex(4)
    state = {}

    def step(kind, fn):
        state[kind] = fn()
        results.append({"resource": kind, "ok": True, "detail": f"created {state[kind].get('id')}"})

    def keystone():
        _, _, p = c.request("POST", ks + "/projects", tok, body={"project": {"name": f"eb-project-{suffix}", "domain_id": "default"}})
        password = secrets.token_urlsafe(24)
        _, _, u = c.request("POST", ks + "/users", tok, body={"user": {"name": f"eb-user-{suffix}", "domain_id": "default", "password": password}})
        _, _, roles = c.request("GET", ks + "/roles?name=member", tok)
        c.request("PUT", f"{ks}/projects/{p['project']['id']}/users/{u['user']['id']}/roles/{roles['roles'][0]['id']}", tok)
        user_tok, _ = c.token(f"eb-user-{suffix}", password, f"eb-project-{suffix}")
        _, _, ac = c.request("POST", f"{ks}/users/{u['user']['id']}/application_credentials", user_tok,
                             body={"application_credential": {"name": f"eb-appcred-{suffix}"}})
        return {"id": p["project"]["id"], "project": f"eb-project-{suffix}", "user": f"eb-user-{suffix}",
                "user_id": u["user"]["id"], "password": password,
                "app_cred": {"id": ac["application_credential"]["id"], "secret": ac["application_credential"]["secret"]}}

    def image():
        data = os.urandom(1 << 20)
        return {"id": upload_image(tok, f"eb-image-{suffix}", data), "sha256": hashlib.sha256(data).hexdigest()}

    def network():
        _, _, n = c.request("POST", c.base("neutron") + "/v2.0/networks", tok, body={"network": {"name": f"eb-net-{suffix}"}})
        return {"id": n["network"]["id"]}

    def server():
        sid = c.create_server(tok, f"eb-server-{suffix}", c.find_image(tok, TINY))
        c.wait(f"server {sid} ACTIVE", lambda: c.server_status(tok, sid) == "ACTIVE", 300)
        return {"id": sid}

    def swift():
        url = c.swift_url(body)
        data = os.urandom(256 << 10)
        container = f"eb-container-{suffix}"
        c.request("PUT", f"{url}/{container}", tok)
        c.request("PUT", f"{url}/{container}/eb-object", tok, raw=data)
        return {"id": f"{container}/eb-object", "url": f"{url}/{container}", "sha256": hashlib.sha256(data).hexdigest()}

    try:
        for kind, fn in (("keystone", keystone), ("image", image), ("network", network),
                         ("server", server), ("swift", swift)):
            step(kind, fn)
    finally:
        fd = os.open(STATE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)


def verify(results):
    state = json.load(open(STATE))
    tok, _ = c.token()

    def check(kind, fn):
        try:
            results.append({"resource": kind, "ok": True, "detail": fn()})
        except Exception as e:  # a failed check is a result, not a crash
            results.append({"resource": kind, "ok": False, "detail": str(e)})

    ks = state["keystone"]

    def app_cred():
        c.token(app_cred=ks["app_cred"])
        return "the application credential authenticates"

    def password():
        c.token(ks["user"], ks["password"], ks["project"])
        return "the user's password authenticates"

    def image():
        _, _, data = c.request("GET", f"{c.base('glance')}/v2/images/{state['image']['id']}/file", tok)
        got = hashlib.sha256(data).hexdigest()
        if got != state["image"]["sha256"]:
            raise RuntimeError(f"downloaded sha256 {got} != uploaded {state['image']['sha256']}")
        return f"downloads, sha256 equal ({got[:12]})"

    def network():
        _, _, n = c.request("GET", f"{c.base('neutron')}/v2.0/networks/{state['network']['id']}", tok)
        return f"exists, status {n['network']['status']}"

    def server():
        status = c.server_status(tok, state["server"]["id"])
        if status != "ACTIVE":
            raise RuntimeError(f"status {status}")
        return "ACTIVE"

    def swift():
        _, _, data = c.request("GET", f"{state['swift']['url']}/eb-object", tok)
        if hashlib.sha256(data).hexdigest() != state["swift"]["sha256"]:
            raise RuntimeError("object content differs")
        return "object content equal"

    check("application_credential", app_cred)
    check("user", password)
    check("image", image)
    check("network", network)
    check("server", server)
    check("swift", swift)


def cleanup(results):
    if not os.path.exists(STATE):
        results.append({"resource": "all", "ok": True, "detail": "nothing was created"})
        return
    state = json.load(open(STATE))
    tok, _ = c.token()
    ks = c.base("keystone") + "/v3"
    steps = []
    if "server" in state:
        steps.append(("server", lambda: c.delete_server(tok, state["server"]["id"])))
    if "swift" in state:
        steps.append(("swift", lambda: (c.request("DELETE", state["swift"]["url"] + "/eb-object", tok),
                                        c.request("DELETE", state["swift"]["url"], tok))))
    if "network" in state:
        steps.append(("network", lambda: c.request("DELETE", f"{c.base('neutron')}/v2.0/networks/{state['network']['id']}", tok)))
    if "image" in state:
        steps.append(("image", lambda: c.request("DELETE", f"{c.base('glance')}/v2/images/{state['image']['id']}", tok)))
    if "keystone" in state:
        steps.append(("keystone", lambda: (c.request("DELETE", f"{ks}/users/{state['keystone']['user_id']}", tok),
                                           c.request("DELETE", f"{ks}/projects/{state['keystone']['id']}", tok))))
    for kind, fn in steps:
        try:
            fn()
            results.append({"resource": kind, "ok": True, "detail": "deleted"})
        except Exception as e:
            results.append({"resource": kind, "ok": False, "detail": str(e)})
    os.remove(STATE)


def main():
    action = sys.argv[1] if len(sys.argv) == 2 else ""
    actions = {"setup": setup, "create": create, "verify": verify, "cleanup": cleanup}
    if action not in actions:
        sys.exit("usage: resources.py setup|create|verify|cleanup")
    results = []
    try:
        actions[action](results)
    except Exception as e:
        results.append({"resource": action, "ok": False, "detail": str(e)})
    if os.environ.get("ENVBUILD_RESULT"):
        os.makedirs(os.path.dirname(os.environ["ENVBUILD_RESULT"]), exist_ok=True)
        with open(os.environ["ENVBUILD_RESULT"], "w") as f:
            json.dump({"resources": results}, f)
    for r in results:
        print(("ok   " if r["ok"] else "FAIL ") + f"{r['resource']}: {r['detail']}")
    sys.exit(0 if all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    main()
