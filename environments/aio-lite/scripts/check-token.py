#!/usr/bin/env python3
"""Readiness check: issue a keystone token through URL.

Usage: check-token.py URL     (e.g. http://127.0.0.1:PORT or .../v3)
Password auth as user "admin" of domain Default, scoped to project "admin";
the password comes from $ENVBUILD_SECRET_ADMIN_PASSWORD (never argv).
Exit 0 and print "ok ..." when keystone answers with an X-Subject-Token,
else exit 1 with a one-line reason on stderr. Python 3 stdlib only.
"""
import json
import os
import sys
import urllib.error
import urllib.request


def fail(reason):
    print(f"check-token: {reason}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) != 2:
        fail("usage: check-token.py URL")
    password = os.environ.get("ENVBUILD_SECRET_ADMIN_PASSWORD")
    if not password:
        fail("ENVBUILD_SECRET_ADMIN_PASSWORD is not set")
    url = sys.argv[1].rstrip("/")
    if not url.endswith("/v3"):
        url += "/v3"
    url += "/auth/tokens"

    domain = {"name": "Default"}
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": domain, "password": password}}},
        "scope": {"project": {"name": "admin", "domain": domain}},
    }}
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json",
                 "Accept": "application/json"})
    # No proxy handler: the target is on loopback, never go through a proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            token = resp.headers.get("X-Subject-Token")
            status = resp.status
            data = json.load(resp)
    except urllib.error.HTTPError as e:
        try:  # keystone's errors are JSON; nginx's (502 while starting) are HTML
            detail = json.load(e)["error"]["message"]
        except Exception:
            detail = e.reason
        fail(f"HTTP {e.code} from {url}: {detail}".replace("\n", " "))
    except (urllib.error.URLError, OSError) as e:
        fail(f"cannot reach {url}: {getattr(e, 'reason', e)}")
    except ValueError as e:
        fail(f"bad JSON from {url}: {e}")
    if not token:
        fail(f"HTTP {status} from {url} but no X-Subject-Token header")
    expires = data.get("token", {}).get("expires_at", "?")
    print(f"ok: token issued by {url} (expires {expires})")


if __name__ == "__main__":
    main()
