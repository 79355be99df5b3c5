#!/usr/bin/env python3
"""What one request of each aio-lite probe costs keystone: latency and CPU seconds.

Usage: envbuild up aio-lite && python3 bench/keystone_cost.py [N] [--envbuild PATH]

Sends N (default 30) requests of each probe (token issue, token validate, project list) one
after the other through NGINX, with the credentials `envbuild creds aio-lite` prints, and reads
the CPU time (utime + stime) of every gunicorn worker of keystone before and after each series:
the CPU a request costs, which is what bounds the rate 2 cores can serve (docs/performance.md,
"aio-lite under 20 Hz probes"). Prints the machine's load average beside each line. Loopback
only; the stdlib only.
"""
import json
import os
import subprocess
import sys
import time
import urllib.request


def creds(envbuild):
    out = subprocess.run([envbuild, "creds", "aio-lite"], check=True,
                         capture_output=True, text=True).stdout
    pairs = (line[len("export "):].split("=", 1) for line in out.splitlines()
             if line.startswith("export "))
    return {k: v.strip("'") for k, v in pairs}


def keystone_cpu():
    """CPU seconds used so far by every keystone gunicorn process on this host."""
    total, tick = 0, os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
            if b"gunicorn" not in cmdline or b"keystone_wsgi" not in cmdline:
                continue
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / tick


def main():
    args = sys.argv[1:]
    envbuild = "envbuild"
    if "--envbuild" in args:
        i = args.index("--envbuild")
        envbuild = args[i + 1]
        del args[i:i + 2]
    n = int(args[0]) if args else 30
    env = creds(envbuild)
    url = env["OS_AUTH_URL"]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    body = json.dumps({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": env["OS_USERNAME"], "domain": {"name": env["OS_USER_DOMAIN_NAME"]},
            "password": env["OS_PASSWORD"]}}},
        "scope": {"project": {"name": env["OS_PROJECT_NAME"],
                              "domain": {"name": env["OS_PROJECT_DOMAIN_NAME"]}}}}}).encode()

    def request(method, path, headers, data=None):
        req = urllib.request.Request(url + path, data=data, method=method, headers=headers)
        with opener.open(req, timeout=60) as answer:
            answer.read()
            return answer.headers

    issue = ("POST", "/auth/tokens", {"Content-Type": "application/json"}, body)
    token = request(*issue)["X-Subject-Token"]
    probes = [
        ("token-issue", issue),
        ("token-validate", ("GET", "/auth/tokens",
                            {"X-Auth-Token": token, "X-Subject-Token": token}, None)),
        ("project-list", ("GET", "/projects", {"X-Auth-Token": token}, None)),
    ]
    for name, call in probes:
        request(*call)  # warm
        cpu, latencies = keystone_cpu(), []
        for _ in range(n):
            started = time.monotonic()
            request(*call)
            latencies.append(time.monotonic() - started)
        cpu = (keystone_cpu() - cpu) / n
        latencies.sort()
        print(f"{name:15} n={n} p50 {latencies[n // 2] * 1000:4.0f} ms  "
              f"p95 {latencies[int(n * 0.95)] * 1000:4.0f} ms  "
              f"keystone CPU {cpu * 1000:4.0f} ms/request  "
              f"(at 20 Hz: {cpu * 20:.2f} cores)  "
              f"load {open('/proc/loadavg').read().split()[0]}")


if __name__ == "__main__":
    main()
