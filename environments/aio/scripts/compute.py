#!/usr/bin/env python3
"""compute.py disable|enable HOST — take one nova-compute out of scheduling before it restarts,
and put it back (nova's documented maintenance step), through the nova API.

  disable  disables the nova-compute service of HOST (the scheduler's ComputeFilter then skips
           it), waits 2 s for scheduling decisions already made, then until no server on HOST
           is still building (at most 120 s): a compute stopped mid-build leaves the server in
           BUILDING, which the restarted compute turns into ERROR
  enable   enables it again
Exit 0 when done, 1 on a timeout or an API error. Stdlib only (aio_client.py).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aio_client as c  # noqa: E402

MICROVERSION = {"OpenStack-API-Version": "compute 2.53"}


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("disable", "enable"):
        print("usage: compute.py disable|enable HOST", file=sys.stderr)
        sys.exit(2)
    action, host = sys.argv[1:]
    tok, _ = c.token()
    nova = c.base("nova") + "/v2.1"
    _, _, body = c.request("GET", f"{nova}/os-services?binary=nova-compute&host={host}", tok, headers=MICROVERSION)
    if not body["services"]:
        sys.exit(f"compute.py: no nova-compute on {host}")
    sid = body["services"][0]["id"]
    status = "disabled" if action == "disable" else "enabled"
    change = {"status": status}
    if action == "disable":
        change["disabled_reason"] = "envbuild rolling upgrade"
    c.request("PUT", f"{nova}/os-services/{sid}", tok, headers=MICROVERSION, body=change)
    if action == "enable":
        print(f"compute.py: {host} enabled")
        return
    time.sleep(2)
    t = time.monotonic()

    def idle():
        _, _, s = c.request("GET", f"{nova}/servers/detail?all_tenants=1&host={host}", tok, headers=MICROVERSION)
        return not [x for x in s["servers"] if x["status"] == "BUILD" or x.get("OS-EXT-STS:task_state")
                    in ("scheduling", "block_device_mapping", "networking", "spawning")]

    c.wait(f"no server building on {host}", idle, 120, 0.5)
    print(f"compute.py: {host} disabled, no build in flight ({time.monotonic() - t:.1f} s)")


if __name__ == "__main__":
    main()
