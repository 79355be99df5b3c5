#!/usr/bin/env python3
"""Scenario probe: create a server (aio-tiny, m1.nano, networks none), wait until ACTIVE,
delete it, wait until it is gone. Phases: token_s, build_s (create -> ACTIVE, the seed's build
time), delete_s (delete -> gone). One iteration; contract in scenario.py. TIMEOUT 240 s."""
import secrets

from scenario import aio_client as c, run

TIMEOUT = 120   # per wait (two waits)


def body(phase):
    with phase("token"):
        tok, _ = c.token()
        image = c.find_image(tok, "aio-tiny")
        if not image:
            raise RuntimeError("no image aio-tiny (resources.py setup)")
    sid = None
    try:
        with phase("build"):
            sid = c.create_server(tok, f"probe-{secrets.token_hex(3)}", image)
            c.wait("ACTIVE", lambda: c.server_status(tok, sid) == "ACTIVE", TIMEOUT, 0.25)
    finally:
        if sid:
            with phase("delete"):
                c.delete_server(tok, sid, TIMEOUT)
    return f"server {sid} built and deleted"


run(body)
