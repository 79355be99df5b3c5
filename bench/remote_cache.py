#!/usr/bin/env python3
"""Remote cache benchmark: the push/pull figures in docs/performance.md.

Usage: bench/remote_cache.py [--size-mib N] [--runs N] [--no-build] [--bin PATH] [--https]
Builds envbuild in release mode, builds a one-stage environment whose artifact is one file of
N MiB (default 1024) of random bytes (incompressible, like a qcow2 overlay full of packages),
starts its own NGINX with WebDAV PUT on a loopback port (client_body_buffer_size 1m, as
docs/remote-cache.md recommends), then in the same run, alternating, measures:
  - `envbuild cache push` to the NGINX (server emptied before each run) and `curl -T` of the
    same file;
  - `envbuild cache pull` into an empty store (download, digest check, decompression, import
    with every file digest recomputed) and `curl -o` of the same file;
  - the peak RSS and the CPU time (user+sys) of each command.
Best of --runs (default 3), and the ratio of the median runs. Prints a Markdown table; traffic stays on 127.0.0.1.
--bin measures another envbuild binary (an old build copied aside, for an A/B in one session).
--https serves over TLS with a certificate from a CA made for the run (openssl), given to
envbuild with --ca-file and to curl with --cacert.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "envbuild")


def measure(args, env):
    """(wall seconds, peak RSS in KiB, CPU seconds) of one command, in a fresh python so that
    other children don't count."""
    code = (
        "import resource,subprocess,sys,json,time;"
        "t=time.perf_counter();"
        "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
        "t=time.perf_counter()-t;"
        "r=resource.getrusage(resource.RUSAGE_CHILDREN);"
        "print(json.dumps([p.returncode,t,r.ru_maxrss,r.ru_utime+r.ru_stime,p.stderr[-2000:]]))"
    )
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True)
    rc, seconds, rss, cpu, err = json.loads(out.stdout)
    if rc != 0:
        sys.exit(f"failed: {' '.join(args)}\n{err}")
    return seconds, rss, cpu


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certificate(work):
    """A CA and a certificate for 127.0.0.1 that it signs: (ca.pem, server.pem, server.key)."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=work, check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bench CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    with open(os.path.join(work, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", "2",
            "-days", "2", "-extfile", "server.ext", "-out", "server.pem")
    return [os.path.join(work, n) for n in ("ca.pem", "server.pem", "server.key")]


def start_nginx(work, root, tls=None):
    port = free_port()
    listen = f"127.0.0.1:{port}"
    if tls:
        listen += f" ssl;\n        ssl_certificate {tls[1]};\n        ssl_certificate_key {tls[2]}"
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off;
master_process off;
user root;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {root}/.body;
    client_body_buffer_size 1m;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    sendfile on;
    server {{
        listen {listen};
        root {root};
        client_max_body_size 0;
        location / {{
            dav_methods PUT DELETE MOVE;
            create_full_put_path on;
        }}
    }}
}}
""")
    proc = subprocess.Popen(["nginx", "-c", conf, "-p", work], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("nginx did not start")


def empty(path):
    for item in os.listdir(path):
        if item == ".body":
            continue
        full = os.path.join(path, item)
        shutil.rmtree(full) if os.path.isdir(full) else os.remove(full)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--bin", help="the envbuild binary to measure (default: a release build of this tree)")
    parser.add_argument("--https", action="store_true", help="serve over TLS (a CA made for the run)")
    args = parser.parse_args()
    global BIN
    if args.bin:
        BIN = os.path.abspath(args.bin)
    elif not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="envbuild-remote-bench-", dir=os.environ.get("BENCH_DIR"))
    nginx = None
    try:
        envs = os.path.join(work, "environments")
        os.makedirs(envs)
        with open(os.path.join(envs, "big.toml"), "w") as f:
            f.write(f"""
[machines.box]
[[machines.box.stages]]
name = "overlay"
steps = ["head -c {args.size_mib}M /dev/urandom > disk.img"]
""")
        root = os.path.join(work, "www")
        os.makedirs(os.path.join(root, ".body"))
        env = dict(os.environ, ENVBUILD_ENVS=envs, ENVBUILD_STORE=os.path.join(work, "store-a"),
                   ENVBUILD_STATE=os.path.join(work, "state-a"), ENVBUILD_CONFIG=os.path.join(work, "none.toml"),
                   NO_COLOR="1")
        open(env["ENVBUILD_CONFIG"], "w").close()
        subprocess.run([BIN, "build", "big", "-q"], env=env, check=True)
        key = os.path.join(work, "bench.key")
        public = subprocess.run([BIN, "cache", "keygen", key], env=env, check=True, capture_output=True, text=True).stdout.strip()
        tls = make_certificate(work) if args.https else None
        nginx, port = start_nginx(work, root, tls)
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/cache"
        if tls:
            env["ENVBUILD_CA_FILE"] = tls[0]
        curl = ["curl", "-sSf"] + (["--cacert", tls[0]] if tls else [])
        entries = os.path.join(work, "store-a", "v1", "entries")
        artifact = os.path.join(entries, os.listdir(entries)[0], "artifact", "disk.img")
        mib = os.path.getsize(artifact) / 2**20

        results = {}
        for name in ["push", "curl_up", "pull", "curl_down"]:
            results[name] = []
        for run in range(args.runs):
            empty(root)
            results["push"].append(measure([BIN, "cache", "push", "big", "-q", "--cache-to", url, "--cache-signing-key", key], env))
            results["curl_up"].append(measure([*curl, "-T", artifact, f"{url}/curl/disk.img"], env))
            pull_env = dict(env, ENVBUILD_STORE=os.path.join(work, f"store-pull-{run}"))
            results["pull"].append(measure([BIN, "cache", "pull", "big", "-q", "--cache-from", url, "--cache-trusted-key", public], pull_env))
            shutil.rmtree(pull_env["ENVBUILD_STORE"])
            out = os.path.join(work, "curl-down.img")
            results["curl_down"].append(measure([*curl, "-o", out, f"{url}/curl/disk.img"], env))
            os.remove(out)
        blobs = os.path.join(root, "cache", "v1", "blobs")
        blob_mib = sum(os.path.getsize(os.path.join(blobs, b)) for b in os.listdir(blobs)) / 2**20

        best = {k: min(v, key=lambda r: r[0]) for k, v in results.items()}
        rate = {k: mib / v[0] for k, v in best.items()}
        # Best-of ratios swing with one lucky run of either side; the medians swing less.
        median = {k: sorted(r[0] for r in v)[len(v) // 2] for k, v in results.items()}
        rows = [
            (f"`cache push` of a {mib:.0f} MiB artifact (best of {args.runs})", f"{best['push'][0]:.2f} s ({rate['push']:.0f} MiB/s)", ""),
            ("`curl -T` of the same file, same run", f"{best['curl_up'][0]:.2f} s ({rate['curl_up']:.0f} MiB/s)", ""),
            ("push / curl throughput", f"{100 * rate['push'] / rate['curl_up']:.0f} %", ">= 80 %"),
            ("push / curl throughput, median runs", f"{100 * median['curl_up'] / median['push']:.0f} % ({median['push']:.2f} s / {median['curl_up']:.2f} s)", ""),
            (f"`cache pull` of it into an empty store (best of {args.runs})", f"{best['pull'][0]:.2f} s ({rate['pull']:.0f} MiB/s)", ""),
            ("`curl -o` of the same file, same run", f"{best['curl_down'][0]:.2f} s ({rate['curl_down']:.0f} MiB/s)", ""),
            ("pull / curl throughput", f"{100 * rate['pull'] / rate['curl_down']:.0f} %", ">= 80 %"),
            ("pull / curl throughput, median runs", f"{100 * median['curl_down'] / median['pull']:.0f} % ({median['pull']:.2f} s / {median['curl_down']:.2f} s)", ""),
            ("peak RSS of `cache push` (max of runs)", f"{max(r[1] for r in results['push']) / 1024:.1f} MiB", "< 64 MiB"),
            ("peak RSS of `cache pull` (max of runs)", f"{max(r[1] for r in results['pull']) / 1024:.1f} MiB", "< 64 MiB"),
            ("CPU time (user+sys) of push / curl -T, best runs", f"{best['push'][2]:.2f} s / {best['curl_up'][2]:.2f} s", ""),
            ("CPU time (user+sys) of pull / curl -o, best runs", f"{best['pull'][2]:.2f} s / {best['curl_down'][2]:.2f} s", ""),
            ("compressed blob on the server", f"{blob_mib:.0f} MiB", ""),
        ]
        print("| measure | result | target |\n| --- | --- | --- |")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        print("\nall runs (wall seconds, peak RSS KiB, CPU seconds):", json.dumps(results))
        print("load average after the runs:", os.getloadavg())
    finally:
        if nginx:
            nginx.kill()
            nginx.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
