"""aio_client: a small stdlib client for the aio cloud, shared by resources.py, the probe
scripts (../probes) and the readiness checks. Reaches every API through HAProxy on loopback,
never through a proxy; credentials from the runtime environment (never argv):
ENVBUILD_PORT_KEYSTONE, ENVBUILD_PORT_<API>, ENVBUILD_SECRET_ADMIN_PASSWORD.
"""
import json
import os
import time
import urllib.error
import urllib.request

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# Microversions: 2.37+ lets a server boot with "networks": "none".
HEADERS = {"compute": {"OpenStack-API-Version": "compute 2.37"}}


class HTTPError(Exception):
    def __init__(self, method, url, status, body):
        super().__init__(f"{method} {url}: HTTP {status} {body[:300]!r}")
        self.status = status


def base(api):
    return f"http://127.0.0.1:{os.environ['ENVBUILD_PORT_' + api.upper()]}"


def request(method, url, token=None, body=None, headers=None, raw=None, timeout=60):
    """Returns (status, headers, body): body parsed from JSON when it is JSON, else bytes."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            content = resp.read()
            status, hdrs = resp.status, resp.headers
    except urllib.error.HTTPError as e:
        raise HTTPError(method, url, e.code, e.read()) from None
    if "json" in (hdrs.get("Content-Type") or "") and content:
        return status, hdrs, json.loads(content)
    return status, hdrs, content


def token(user="admin", password=None, project="admin", domain="Default", app_cred=None):
    """Issues a token; returns (token, body of the token: catalog, project, user)."""
    if app_cred:
        identity = {"methods": ["application_credential"], "application_credential": app_cred}
        auth = {"identity": identity}
    else:
        password = password or os.environ["ENVBUILD_SECRET_ADMIN_PASSWORD"]
        identity = {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": domain}, "password": password}}}
        auth = {"identity": identity, "scope": {"project": {"name": project, "domain": {"name": domain}}}}
    _, hdrs, body = request("POST", base("keystone") + "/v3/auth/tokens", body={"auth": auth})
    return hdrs["X-Subject-Token"], body["token"]


def swift_url(tok):
    """The admin project's swift account URL, from the token's catalog."""
    for entry in tok["catalog"]:
        if entry["type"] == "object-store":
            return next(e["url"] for e in entry["endpoints"] if e["interface"] == "public")
    raise RuntimeError("no object-store in the catalog")


def wait(what, check, timeout, interval=0.5):
    """Calls check() until it returns a true value (returned) or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def server_status(tok, server_id):
    """The server's status, or None once it is gone (404)."""
    try:
        _, _, body = request("GET", f"{base('nova')}/v2.1/servers/{server_id}", tok,
                             headers=HEADERS["compute"])
    except HTTPError as e:
        if e.status == 404:
            return None
        raise
    server = body["server"]
    if server["status"] == "ERROR":
        raise RuntimeError(f"server {server_id} is in ERROR: {server.get('fault')}")
    return server["status"]


def create_server(tok, name, image, flavor="42"):
    _, _, body = request("POST", f"{base('nova')}/v2.1/servers", tok, headers=HEADERS["compute"],
                         body={"server": {"name": name, "imageRef": image, "flavorRef": flavor,
                                          "networks": "none"}})
    return body["server"]["id"]


def delete_server(tok, server_id, timeout=120):
    request("DELETE", f"{base('nova')}/v2.1/servers/{server_id}", tok, headers=HEADERS["compute"])
    wait(f"server {server_id} gone", lambda: server_status(tok, server_id) is None, timeout)


def find_image(tok, name):
    _, _, body = request("GET", f"{base('glance')}/v2/images?name={name}", tok)
    return body["images"][0]["id"] if body["images"] else None
