#!/usr/bin/env python3
"""libvirt backend benchmark: the VM figures in docs/performance.md.

Usage: bench/bench_libvirt.py [--binary PATH]
Needs what tests/libvirt.rs needs (dev/setup), and reuses its base image cache
($ENVBUILD_TEST_CACHE/images, default /var/cache/envbuild-test/images; built on first use).
In one run, with a temporary store and state folder, for a machine with a 3 GiB disk:
  1. replaying a cached stage: envbuild's restore (chain check) and the overlay `up` creates,
     vs copying the disk: `cp` of the stage's chain flattened by `qemu-img convert`, and of a
     fully allocated 3 GiB raw disk;
  2. boot-to-SSH of the VM under this host's accelerator (TCG here), and how much of a warm
     `up` is envbuild's own work.
Prints a Markdown table. VMs use QEMU user networking bound to 127.0.0.1 only.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SPEC = """
[machines.box]
backend = "libvirt"
resources = { cpus = 1, memory = "512MiB", disk = "3GiB" }
base = { debootstrap = { suite = "bookworm" } }

[[machines.box.stages]]
name = "one"
steps = ["echo one > /etc/one", "dd if=/dev/urandom of=/var/tmp/blob bs=1M count=64 status=none"]
"""


def timed(args, env, check=True):
    start = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if check and proc.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{proc.stdout}\n{proc.stderr}")
    return seconds, proc


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=os.path.join(ROOT, "target", "debug", "envbuild"))
    args = parser.parse_args()
    if not os.path.exists(args.binary):
        subprocess.run(["cargo", "build"], cwd=ROOT, check=True)
    cache = os.environ.get("ENVBUILD_TEST_CACHE", "/var/cache/envbuild-test")
    work = tempfile.mkdtemp(prefix="envbuild-bench-vm-")
    rows = []
    try:
        os.makedirs(os.path.join(work, "environments"))
        with open(os.path.join(work, "environments", "bench.toml"), "w") as f:
            f.write(SPEC)
        env = dict(os.environ)
        env.update(
            ENVBUILD_ENVS=os.path.join(work, "environments"),
            ENVBUILD_STORE=os.path.join(work, "store"),
            ENVBUILD_STATE=os.path.join(work, "state"),
            ENVBUILD_IMAGES=os.path.join(cache, "images"),
            NO_COLOR="1",
        )
        eb = [args.binary]
        cold, _ = timed(eb + ["build", "bench", "-q"], env)
        rows.append(("cold build of one stage (base image cached): boot, steps, clean power-off, commit", f"{cold:.1f} s"))

        # 1. Replay: the machine is made not-current, so `build` restores the cached stage.
        marker = os.path.join(work, "state", "envs", "bench", "box", "marker.json")
        restores = []
        for _ in range(5):
            os.remove(marker)
            seconds, proc = timed(eb + ["build", "bench", "--json"], env)
            report = json.loads(proc.stdout)
            stage = report["stages"][-1]
            assert stage["action"] == "restored" and stage["steps_run"] == 0, report
            restores.append((stage["seconds"], seconds))
        restores.sort()
        median = restores[len(restores) // 2]
        rows.append(("replay a cached stage: envbuild restore (chain check), median of 5", f"{median[0] * 1000:.0f} ms"))
        rows.append(("the whole `envbuild build` command doing that replay", f"{median[1] * 1000:.0f} ms"))

        entries = os.path.join(work, "store", "v1", "entries")
        entry = os.path.join(entries, os.listdir(entries)[0], "artifact", "disk.qcow2")
        overlay = os.path.join(work, "overlay.qcow2")
        times = []
        for _ in range(5):
            if os.path.exists(overlay):
                os.remove(overlay)
            seconds, _ = timed(["qemu-img", "create", "-q", "-f", "qcow2", "-b", entry, "-F", "qcow2", overlay], env)
            times.append(seconds)
        times.sort()
        rows.append(("the thin overlay `up` creates on it (`qemu-img create -b`), median of 5", f"{times[2] * 1000:.0f} ms, {os.path.getsize(overlay) // 1024} KiB"))

        flat = os.path.join(work, "flat.qcow2")
        seconds, _ = timed(["qemu-img", "convert", "-O", "qcow2", entry, flat], env)
        rows.append(("copying instead: flatten the stage's chain into one qcow2 (`qemu-img convert`)", f"{seconds:.1f} s, {os.path.getsize(flat) >> 20} MiB"))
        copy = os.path.join(work, "copy.qcow2")
        subprocess.run(["sync"], check=True)
        seconds, _ = timed(["cp", flat, copy], env)
        rows.append(("copying instead: `cp` of that flattened disk", f"{seconds:.1f} s"))
        raw = os.path.join(work, "full.raw")
        seconds, _ = timed(["qemu-img", "convert", "-O", "raw", "-S", "0", entry, raw], env)
        rows.append(("copying instead: the 3 GiB disk fully allocated (`qemu-img convert -O raw -S 0`)", f"{seconds:.1f} s, {os.path.getsize(raw) >> 20} MiB"))
        for path in (flat, copy, raw, overlay):
            os.remove(path)

        # 2. Boot-to-SSH and envbuild's share of a warm `up`.
        for label in ("first", "second"):
            seconds, proc = timed(eb + ["up", "bench", "--json"], env)
            up = json.loads(proc.stdout)
            assert all(s["steps_run"] == 0 for s in up["build"]["stages"]), up
            log = os.path.join(work, "state", "envs", "bench", "box", "logs", "boot-times.log")
            boot = float(open(log).read().split()[-1])
            rows.append((f"warm `up` ({label}): wall time", f"{seconds:.1f} s"))
            rows.append((f"  of which boot-to-SSH (virsh create until SSH answers with the pinned key)", f"{boot:.1f} s"))
            rows.append((f"  of which envbuild's own work (load, keys, chain check, overlay, seed, domain XML)", f"{seconds - boot:.2f} s"))
            down, _ = timed(eb + ["down", "bench", "-q"], env)
            rows.append((f"`down` ({label}): clean guest power-off", f"{down:.1f} s"))
        accel = open(os.path.join(work, "state", "envs", "bench", "box", "root", "up.xml")).read().split("'")[1]
        rows.append(("domain type (accelerator)", "kvm" if accel == "kvm" else "qemu (TCG)"))
    finally:
        subprocess.run([args.binary, "down", "bench", "-q"], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    print("| measure | result |\n| --- | --- |")
    for measure, result in rows:
        print(f"| {measure} | {result} |")


if __name__ == "__main__":
    main()
