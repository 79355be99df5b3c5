#!/usr/bin/env python3
"""loop.py start OUT | stop OUT — runs the scenario probes in the background during the
upgrade phases, until envbuild runs them itself (docs/aio.md, "Scenario probes").

  start OUT   forks a detached loop (its pid in OUT/scenario.pid) that runs server.py,
              object.py and keystone_token.py, each in its own thread, back to back (one iteration per
              run, as the contract says), appending every sample to OUT/scenario.jsonl:
              {"t_ms", "probe", "ok", "detail", "phases", "exit"}
  stop OUT    asks the loop to stop (OUT/scenario.stop), waits for the iterations in flight
              (a server build: up to 4 min), then prints per probe the samples, failures and
              p50/p95 of total_s, writes {"scenario": {...}} to $ENVBUILD_RESULT when set, and
              exits 1 if any sample failed or a probe never ran.
The loop also ends by itself when $ENVBUILD_RUN disappears (`envbuild down`), or after
MAX_SECONDS, so an aborted flow leaves nothing running for long.
"""
import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROBES = ("server", "object", "keystone_token")
MAX_SECONDS = 3 * 3600


def loop(out):
    start = time.monotonic()
    lock = threading.Lock()
    stop_file = os.path.join(out, "scenario.stop")
    run_dir = os.environ["ENVBUILD_RUN"]

    def done():
        return (os.path.exists(stop_file) or not os.path.isdir(run_dir)
                or time.monotonic() - start > MAX_SECONDS)

    def one(name):
        while not done():
            t = time.time()
            try:
                p = subprocess.run([sys.executable, os.path.join(HERE, f"{name}.py")],
                                   capture_output=True, text=True, timeout=300)
                line = (p.stdout.strip().splitlines() or ["{}"])[-1]
                try:
                    sample = json.loads(line)
                except ValueError:
                    sample = {"ok": False, "detail": f"no JSON line: {line[:200]!r} {p.stderr[-200:]!r}"}
                code = p.returncode
            except subprocess.TimeoutExpired:
                sample, code = {"ok": False, "detail": "killed after 300 s"}, None
            sample = {"t_ms": int(t * 1000), "probe": name, "ok": bool(sample.get("ok")) and code == 0,
                      "detail": sample.get("detail"), "phases": sample.get("phases", {}), "exit": code}
            with lock, open(os.path.join(out, "scenario.jsonl"), "a") as f:
                f.write(json.dumps(sample) + "\n")
            time.sleep(0.5)

    threads = [threading.Thread(target=one, args=(n,)) for n in PROBES]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def start(out):
    os.makedirs(out, exist_ok=True)
    for f in ("scenario.stop", "scenario.jsonl"):
        if os.path.exists(os.path.join(out, f)):
            os.remove(os.path.join(out, f))
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            with open(os.path.join(out, "scenario.pid"), "w") as f:
                f.write(str(os.getpid()))
            loop(out)
        os._exit(0)
    time.sleep(0.5)
    print(f"loop.py: scenario probes {', '.join(PROBES)} running, samples in {out}/scenario.jsonl")


def stop(out):
    open(os.path.join(out, "scenario.stop"), "w").close()
    pid = int(open(os.path.join(out, "scenario.pid")).read())
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        print(f"loop.py: the loop ({pid}) did not stop in 300 s", file=sys.stderr)
    samples = [json.loads(line) for line in open(os.path.join(out, "scenario.jsonl"))] \
        if os.path.exists(os.path.join(out, "scenario.jsonl")) else []
    summary, ok = {}, True
    for name in PROBES:
        mine = [s for s in samples if s["probe"] == name]
        totals = sorted(s["phases"].get("total_s", 0) for s in mine if s["ok"])
        pct = lambda q: totals[min(len(totals) - 1, int(q * len(totals)))] if totals else None
        failed = [s for s in mine if not s["ok"]]
        summary[name] = {"samples": len(mine), "failed": len(failed), "p50_s": pct(0.5), "p95_s": pct(0.95)}
        print(f"loop.py: {name}: {len(mine)} samples, {len(failed)} failed, p50 {pct(0.5)} s, p95 {pct(0.95)} s")
        for s in failed[:5]:
            print(f"  FAILED at {s['t_ms']}: {s['detail']}")
        ok = ok and mine and not failed
    if os.environ.get("ENVBUILD_RESULT"):
        with open(os.environ["ENVBUILD_RESULT"], "w") as f:
            json.dump({"scenario": summary}, f)
    sys.exit(0 if ok else 1)


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit("usage: loop.py start OUT | stop OUT")
    (start if sys.argv[1] == "start" else stop)(sys.argv[2])


if __name__ == "__main__":
    main()
