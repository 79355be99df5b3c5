"""Shared part of the scenario probes (server.py, object.py, keystone_token.py): the JSON-lines contract.

A scenario probe does ONE iteration per run and prints ONE line on stdout:
  {"ok": true|false, "detail": "...", "phases": {"NAME_s": seconds, ...}}
and exits 0 when ok, 1 when not (anything else, e.g. a crash with exit 2, is a failed sample
too). It reads the runtime environment (ENVBUILD_PORT_*, ENVBUILD_SECRET_ADMIN_PASSWORD), runs
in the machine root, and bounds its own duration (each script's TIMEOUT) and cleans up what it
created even when a step fails. docs/aio.md ("Scenario probes") is the contract's reference.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import aio_client  # noqa: E402,F401  (re-exported for the probes)


def run(body):
    """Runs body(phase) where phase(name) is a context manager timing one step; prints the
    line and exits."""
    phases = {}
    start = time.monotonic()

    class Phase:
        def __init__(self, name):
            self.name = name

        def __enter__(self):
            self.t = time.monotonic()

        def __exit__(self, *exc):
            phases[f"{self.name}_s"] = round(time.monotonic() - self.t, 3)

    try:
        detail = body(Phase) or "ok"
        ok = True
    except Exception as e:  # the sample failed: say why, in one line
        detail, ok = f"{type(e).__name__}: {e}".replace("\n", " ")[:500], False
    phases["total_s"] = round(time.monotonic() - start, 3)
    print(json.dumps({"ok": ok, "detail": detail, "phases": phases}), flush=True)
    sys.exit(0 if ok else 1)
