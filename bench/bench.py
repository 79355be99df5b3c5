#!/usr/bin/env python3
"""envbuild benchmarks: the figures in docs/performance.md.

Usage: bench/bench.py [--skip-aio] [--size-mib N]
Builds envbuild in release mode, then measures, in one run on this machine:
  1. hashing a large input: envbuild (cold fingerprint cache) vs sha256sum on the same file;
     then a second plan with the file unchanged (must read nothing: files_read=0);
  2. `envbuild plan` over every environment in environments/ with a warm fingerprint cache
     (median of 30 runs);
  3. peak memory (max RSS) of plan and build over the large input;
  4. `envbuild up aio-lite` cold (empty store) vs warm (everything cached, services stopped),
     with envbuild's own overhead (load, hash, lookup, restore) separated from service start.
Prints a Markdown table; nothing is sent anywhere but loopback.
"""
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "envbuild")


def run(args, env=None, check=True, capture=True):
    """Runs a command; returns (seconds, completed process, max RSS in KiB of this child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=capture, text=True)
    seconds = time.perf_counter() - start
    if check and proc.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{proc.stdout}\n{proc.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, proc, max(after, before)


def rss_of(args, env):
    """Peak RSS (KiB) of one command, measured in a fresh python so earlier children don't count."""
    code = (
        "import resource,subprocess,sys,json;"
        "p=subprocess.run(sys.argv[1:],capture_output=True);"
        "print(json.dumps([p.returncode,resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))"
    )
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True)
    code, rss = json.loads(out.stdout)
    if code != 0:
        sys.exit(f"failed: {' '.join(args)}")
    return rss


def bench_hashing(size_mib, rows):
    work = tempfile.mkdtemp(prefix="envbuild-bench-")
    try:
        envs = os.path.join(work, "environments")
        os.makedirs(os.path.join(envs, "big"))
        big = os.path.join(envs, "big", "blob.bin")
        with open(big, "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(size_mib):
                f.write(chunk)
        with open(os.path.join(envs, "big.toml"), "w") as f:
            f.write('[machines.m]\n[[machines.m.stages]]\nname = "s"\ninputs = ["blob.bin"]\nsteps = ["true"]\n')
        env = dict(os.environ, ENVBUILD_STORE=os.path.join(work, "store"), ENVBUILD_STATE=os.path.join(work, "state"),
                   ENVBUILD_ENVS=envs)
        # Warm the page cache so both tools read from memory, then alternate them three times.
        with open(big, "rb") as f:
            while f.read(1 << 24):
                pass
        ours, theirs = [], []
        for _ in range(3):
            fp = os.path.join(work, "store", "v1", "fingerprints.json")
            if os.path.exists(fp):
                os.remove(fp)
            # The file must look old enough to be remembered (racy window is 2 s).
            os.utime(big, (time.time() - 60, time.time() - 60))
            t, _, _ = run([BIN, "hash", "big"], env)
            ours.append(t)
            t, _, _ = run(["sha256sum", big])
            theirs.append(t)
        mib = size_mib
        o, s = min(ours), min(theirs)
        rows.append((f"hash {mib} MiB input, cold cache (best of 3)", f"{o:.3f} s ({mib / o:.0f} MiB/s)"))
        rows.append((f"sha256sum same file (best of 3)", f"{s:.3f} s ({mib / s:.0f} MiB/s)"))
        rows.append(("envbuild / sha256sum throughput", f"{100 * s / o:.0f} %"))
        # utime changed the file's ctime; once it is out of the racy window, one plan remembers
        # the digest and the next must read nothing.
        time.sleep(2.5)
        run([BIN, "plan", "big"], env)
        denv = dict(env, ENVBUILD_LOG="debug", NO_COLOR="1")
        t, proc, _ = run([BIN, "plan", "big"], denv)
        reads = [l.split("files_read=")[1].split()[0] for l in proc.stderr.splitlines() if "files_read=" in l]
        rows.append(("next plan, file unchanged", f"{t * 1000:.1f} ms; files read: {reads[-1] if reads else '?'}"))
        os.remove(os.path.join(work, "store", "v1", "fingerprints.json"))
        rows.append(("peak RSS: plan, cold cache (hashes the input)", f"{rss_of([BIN, 'plan', 'big'], env) / 1024:.1f} MiB"))
        rows.append(("peak RSS: build (snapshot of the input)", f"{rss_of([BIN, 'build', 'big', '-q'], env) / 1024:.1f} MiB"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_plan_all(rows):
    names = sorted(f[:-5] for f in os.listdir(os.path.join(ROOT, "environments")) if f.endswith(".toml"))
    work = tempfile.mkdtemp(prefix="envbuild-bench-")
    try:
        env = dict(os.environ, ENVBUILD_STORE=os.path.join(work, "store"), ENVBUILD_STATE=os.path.join(work, "state"),
                   ENVBUILD_ENVS=os.path.join(ROOT, "environments"))
        for name in names:  # warm the fingerprint cache (older than the racy window already)
            run([BIN, "plan", name], env)
        times = []
        for _ in range(30):
            start = time.perf_counter()
            for name in names:
                run([BIN, "plan", name], env)
            times.append(time.perf_counter() - start)
        rows.append((f"plan over all {len(names)} environments, warm (median of 30)", f"{statistics.median(times) * 1000:.1f} ms"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_aio(rows):
    work = tempfile.mkdtemp(prefix="envbuild-bench-aio-")
    env = dict(os.environ, ENVBUILD_STORE=os.path.join(work, "store"), ENVBUILD_STATE=os.path.join(work, "state"),
               ENVBUILD_ENVS=os.path.join(ROOT, "environments"))
    try:
        t_cold, _, _ = run([BIN, "up", "aio-lite", "-q"], env)
        run([BIN, "down", "aio-lite", "-q"], env)
        t_warm, proc, _ = run([BIN, "up", "aio-lite", "--json", "-q"], env)
        report = json.loads(proc.stdout)
        build = report["build"]["seconds"]
        run([BIN, "down", "aio-lite", "-q"], env)
        t_plan, _, _ = run([BIN, "plan", "aio-lite"], env)
        rows.append(("up aio-lite, cold (empty store)", f"{t_cold:.1f} s"))
        rows.append(("up aio-lite, warm (all cached, services stopped)", f"{t_warm:.2f} s"))
        rows.append(("  of which envbuild: load + hash + lookup + restore", f"{build + t_plan:.2f} s (restore {build:.2f} s, plan {t_plan * 1000:.0f} ms)"))
        rows.append(("  of which prestart + services until a token is issued", f"{t_warm - build:.2f} s"))
    finally:
        subprocess.run([BIN, "down", "aio-lite", "-q"], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def main():
    skip_aio = "--skip-aio" in sys.argv
    size = int(sys.argv[sys.argv.index("--size-mib") + 1]) if "--size-mib" in sys.argv else 1024
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    rows = []
    bench_hashing(size, rows)
    bench_plan_all(rows)
    if not skip_aio:
        bench_aio(rows)
    print(f"| measure ({os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}) | result |")
    print("| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
