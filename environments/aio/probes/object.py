#!/usr/bin/env python3
"""Scenario probe: PUT an object of 4 KiB random bytes into container "probe", GET it back
(content checked), DELETE it. Phases: token_s, put_s, get_s, delete_s. One iteration; contract
in scenario.py. Each request has a 30 s timeout."""
import os
import secrets

from scenario import aio_client as c, run


def body(phase):
    with phase("token"):
        tok, t = c.token()
        url = f"{c.swift_url(t)}/probe"
    name = f"o-{secrets.token_hex(4)}"
    data = os.urandom(4096)
    with phase("put"):
        c.request("PUT", url, tok, timeout=30)           # the container (201 or 202)
        c.request("PUT", f"{url}/{name}", tok, raw=data, timeout=30)
    try:
        with phase("get"):
            _, _, got = c.request("GET", f"{url}/{name}", tok, timeout=30)
            if got != data:
                raise RuntimeError(f"GET returned {len(got)} bytes that differ from the PUT")
    finally:
        with phase("delete"):
            c.request("DELETE", f"{url}/{name}", tok, timeout=30)
    return f"object {name} put, read back equal, deleted"


run(body)
