#!/usr/bin/env python3
"""lb.py drain|enable|status [API SERVER] — take one API process out of HAProxy, or put it
back, through HAProxy's admin socket ($ENVBUILD_RUN/haproxy.sock): no reload, no dropped
request. API is a backend (keystone, glance, placement, nova, neutron, swift), SERVER one of
its servers (the port names: keystone_api1, swift_proxy2, ...).

  drain   state "drain" (no new requests), wait until its in-flight requests are done
          (scur = 0, at most 60 s), then "maint" (health checks stop too)
  enable  state "ready", then wait until the health checks see it UP (rise 2 x 500 ms, at
          most 60 s)
  status  every server's status, sessions and check result
Exit 0 when done, 1 on a timeout or an error from HAProxy, 2 on bad usage. Stdlib only.
"""
import os
import socket
import sys
import time


def command(line):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(os.path.join(os.environ["ENVBUILD_RUN"], "haproxy.sock"))
    s.sendall(line.encode() + b"\n")
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    s.close()
    return out.decode()


def stats():
    lines = command("show stat").splitlines()
    header = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:] if line]
    return {(r["pxname"], r["svname"]): r for r in rows if r["svname"] not in ("FRONTEND", "BACKEND")}


def wait(api, server, done, what):
    deadline = time.monotonic() + 60
    while True:
        row = stats().get((api, server))
        if row is None:
            sys.exit(f"lb.py: no server {server} in backend {api}")
        if done(row):
            return row
        if time.monotonic() > deadline:
            sys.exit(f"lb.py: {api}/{server} still not {what} after 60 s: status {row['status']}, "
                     f"{row['scur']} sessions")
        time.sleep(0.1)


def set_state(api, server, state):
    out = command(f"set server {api}/{server} state {state}").strip()
    if out:
        sys.exit(f"lb.py: haproxy: {out}")


def main():
    args = sys.argv[1:]
    if args == ["status"]:
        for (api, server), r in sorted(stats().items()):
            print(f"{api}/{server}: {r['status']} sessions={r['scur']} check={r['check_status']}")
        return
    if len(args) != 3 or args[0] not in ("drain", "enable"):
        print("usage: lb.py drain|enable API SERVER | status", file=sys.stderr)
        sys.exit(2)
    action, api, server = args
    t = time.monotonic()
    if action == "drain":
        set_state(api, server, "drain")
        wait(api, server, lambda r: r["scur"] == "0", "idle")
        set_state(api, server, "maint")
        print(f"lb.py: {api}/{server} drained and in maintenance ({time.monotonic() - t:.1f} s)")
    else:
        set_state(api, server, "ready")
        wait(api, server, lambda r: r["status"].startswith("UP"), "UP")
        print(f"lb.py: {api}/{server} UP ({time.monotonic() - t:.1f} s)")


if __name__ == "__main__":
    main()
