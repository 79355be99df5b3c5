"""subunit2json.py IN.subunit OUT.json WALL_SECONDS — summarise a subunit v2 stream.

Run with venv-tempest's python (python-subunit and testtools come with tempest).
Writes {passed, failed, skipped, wall_seconds, tests: [{name, status, duration,
reason?}]}, tests sorted by name. status: passed | failed | skipped (xfail
counts as passed, an unexpected success as failed). name: the test id without
its [attributes]; duration: seconds, 3 decimals. A class whose setUpClass failed
shows up as one failed "setUpClass (module.Class)" entry, as in tempest's output.
"""
import json
import re
import sys

import subunit
import testtools

src, dst, wall = sys.argv[1:]
tests = []


def on_test(t):
    if t["status"] in ("exists", None):
        return
    status = {"success": "passed", "xfail": "passed", "skip": "skipped",
              "fail": "failed", "uxsuccess": "failed"}.get(t["status"], "failed")
    start, stop = t["timestamps"]
    entry = {"name": re.sub(r"\[.*\]$", "", t["id"]), "status": status,
             "duration": round((stop - start).total_seconds(), 3)
             if start and stop else None}
    if status == "skipped" and "reason" in t["details"]:
        entry["reason"] = t["details"]["reason"].as_text().strip()
    tests.append(entry)


with open(src, "rb") as f:
    case = subunit.ByteStreamToStreamResult(f, non_subunit_name="stdout")
    result = testtools.StreamToDict(on_test)
    result.startTestRun()
    case.run(result)
    result.stopTestRun()

tests.sort(key=lambda t: t["name"])
count = {s: sum(t["status"] == s for t in tests) for s in ("passed", "failed", "skipped")}
with open(dst, "w") as f:
    json.dump({**count, "wall_seconds": int(wall), "tests": tests}, f, indent=2)
    f.write("\n")
