"""summarize.py DIR UUID | --merge OUT TASKS RESULT

DIR UUID: DIR/summary.json from Rally's DIR/report.json (task UUID): per scenario its
iterations, failures, mean and p95 duration (nearest rank over the successful iterations, as
Rally's "95%ile") and SLA; one line per scenario on stdout. Exit 1 unless the task finished,
every scenario ran and every SLA passed.

--merge OUT TASKS RESULT: the figures of every task's OUT/TASK/summary.json, keyed
TASK/SCENARIO, plus "sla_passed" for them all, merged into envbuild's RESULT file (when set).
"""
import json
import math
import os
import sys


def p95(values):
    if not values:
        return None
    ranked = sorted(values)
    return round(ranked[max(0, math.ceil(0.95 * len(ranked)) - 1)], 3)


def summarize(folder, uuid):
    with open(os.path.join(folder, "report.json")) as f:
        report = json.load(f)
    task = next(t for t in report["tasks"] if t["uuid"] == uuid)
    scenarios = []
    for subtask in task["subtasks"]:
        for workload in subtask["workloads"]:
            ok = [i["duration"] for i in workload["data"] if not i.get("error")]
            scenarios.append({
                "name": next(iter(workload["scenario"])),
                "iterations": len(workload["data"]),
                "failures": len(workload["data"]) - len(ok),
                "duration_avg": round(sum(ok) / len(ok), 3) if ok else None,
                "duration_p95": p95(ok),
                "sla_passed": bool(workload["pass_sla"]),
                "sla": [f"{c['criterion']}: {c['detail']}" for c in workload["sla_results"].get("sla", [])],
            })
    passed = (task["status"] == "finished" and bool(task["pass_sla"]) and bool(scenarios)
              and all(s["iterations"] > 0 and s["sla_passed"] for s in scenarios))
    summary = {"task_id": uuid, "status": task["status"], "sla_passed": passed, "scenarios": scenarios}
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    for s in scenarios:
        print(f"rally: {s['name']}: {s['iterations']} iterations, {s['failures']} failed, "
              f"mean {s['duration_avg']} s, p95 {s['duration_p95']} s")
    return 0 if passed else 1


def merge(out, tasks, result):
    figures, passed = {}, True
    for task in tasks.split():
        try:
            with open(os.path.join(out, task, "summary.json")) as f:
                summary = json.load(f)
        except OSError:
            passed = False
            continue
        passed = passed and summary["sla_passed"]
        for s in summary["scenarios"]:
            figures[f"{task}/{s['name']}"] = {k: s[k] for k in ("iterations", "failures", "duration_avg", "duration_p95")}
    figures["sla_passed"] = passed
    if result:
        try:
            with open(result) as f:
                merged = json.load(f)
        except (OSError, ValueError):
            merged = {}
        merged["rally"] = figures
        merged["when"] = "after"
        with open(result, "w") as f:
            json.dump(merged, f)
    print(f"rally: {'all SLAs passed' if passed else 'an SLA FAILED or a task did not run'}")
    return 0 if passed else 1


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--merge":
        sys.exit(merge(*sys.argv[2:]))
    if len(sys.argv) == 3:
        sys.exit(summarize(*sys.argv[1:]))
    sys.exit(__doc__)
