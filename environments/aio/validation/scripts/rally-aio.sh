#!/bin/sh
# rally-aio.sh OUT — Rally tasks (nova boot-and-delete, swift objects, keystone) against this aio.
#
# Runtime script (test time, cwd = machine root, a running aio):
#   needs ENVBUILD_PORT_KEYSTONE, ENVBUILD_SECRET_ADMIN_PASSWORD, ENVBUILD_RUN
#   (e.g. `envbuild exec aio controller -- sh share/validation/rally-aio.sh OUT`)
#   and venv-rally/ from the "rally" stage.
# Optional environment:
#   RALLY_TASK_ARGS  JSON dict for rally-aio-task.yaml: boot_times (4), boot_concurrency (2),
#                    swift_times (4), swift_concurrency (2), auth_times (6),
#                    auth_concurrency (2)
#   RALLY_VENV       venv folder in the machine root (default venv-rally)
#   ENVBUILD_RESULT  set by `envbuild test`: {"rally": {scenario: {iterations,
#                    failures, duration_avg, duration_p95}, sla_passed}, "when":
#                    VALIDATION_WHEN (before|after, default before)} is merged in
# Writes OUT/rally/:
#   report.json    rally's own JSON report (`rally task report --json`)
#   report.html    the same, as rally's self-contained HTML
#   summary.json   {scenarios: [{name, iterations, failures, duration_avg,
#                  duration_p95, ...}], sla_passed, task_id, wall_seconds, leftovers}
#   task.yaml      the task file; rally.log: rally's console output
# The rally DB (sqlite), rally.conf and rally's HOME (~/.rally/globals, openrc)
# hold the admin password: they live in a private dir under $ENVBUILD_RUN,
# deleted at exit. Users and projects rally creates are deleted by rally's own
# cleanup contexts; anything named rally_*/s_rally_*/c_rally_* still there
# afterwards is deleted too and counted in summary.json.
# Companions, found next to this script: rally-aio-task.yaml,
# keystone-leftovers.py.
# Exit status: 0 if the task finished and every SLA passed; 1 otherwise; 2 for
# a usage or setup error (keystone unreachable, wrong password, no venv).
set -eu
here=$(cd "$(dirname "$0")" && pwd)   # before any cd: $0 may be relative
. "$here/common.sh"
# Sets root, out, port, py and priv (private, deleted at exit); checks keystone.
validation_setup rally "${RALLY_VENV:-venv-rally}" "$@"
mkdir -p "$priv/home"
# Rally's DB defaults to $TMPDIR/rally.sqlite (shared by every rally on the
# host) and its config to ~/.rally/rally.conf or /etc/rally/rally.conf: pin both.
cat >"$priv/rally.conf" <<EOF
[DEFAULT]
use_stderr = true
[database]
connection = sqlite:///$priv/rally.sqlite
EOF
cp "$here/rally-aio-task.yaml" "$out/task.yaml"

# Every rally command: this venv's python (console scripts are not relocatable),
# this config, a private HOME (rally writes ~/.rally/globals), no bytecode.
rally() {
    HOME="$priv/home" PYTHONDONTWRITEBYTECODE=1 \
        "$py" -m rally.cli.main --config-file "$priv/rally.conf" "$@"
}

# The deployment ("existing cloud") from OS_* variables: the password travels
# in the environment, never in argv.
export OS_AUTH_URL="http://127.0.0.1:$port/v3" OS_USERNAME=admin \
    OS_PASSWORD="$ENVBUILD_SECRET_ADMIN_PASSWORD" OS_PROJECT_NAME=admin \
    OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default \
    OS_REGION_NAME=RegionOne OS_INTERFACE=public OS_IDENTITY_API_VERSION=3
unset OS_CLOUD OS_TENANT_NAME OS_ENDPOINT_TYPE OS_CACERT OS_INSECURE || true

log=$out/rally.log
start=$(date +%s)
# (No `rally deployment check`: `task start` checks the cloud's health first.)
{
    rally db create
    rally deployment create --fromenv --name aio
} >>"$log" 2>&1 || { echo "rally-aio.sh: rally setup failed, see $log" >&2; exit 2; }
unset OS_PASSWORD

before=$("$py" "$here/keystone-leftovers.py" rally_ s_rally_ c_rally_)
targs='{}'
[ -z "${RALLY_TASK_ARGS:-}" ] || targs=$RALLY_TASK_ARGS
rc=0
rally task start --task "$out/task.yaml" --task-args "$targs" \
    --tag aio >>"$log" 2>&1 || rc=$?
# `task start` records the new task in ~/.rally/globals (saves a `task list`).
task_id=$(sed -n 's/^RALLY_TASK=//p' "$priv/home/.rally/globals" 2>/dev/null || true)
[ -n "$task_id" ] || { echo "rally-aio.sh: no task was created, see $log" >&2; exit 1; }
rally task report --uuid "$task_id" --json --out "$out/report.json" >>"$log" 2>&1 || rc=1
rally task report --uuid "$task_id" --html-static --out "$out/report.html" >>"$log" 2>&1 || true
end=$(date +%s)

# Leftovers (a cleanup that failed): delete them, and say so.
"$py" "$here/keystone-leftovers.py" --delete rally_ s_rally_ c_rally_ \
    >"$priv/leftovers.json" 2>>"$log" || rc=1

validation_check_leak || rc=1

"$py" - "$here" "$out" "$task_id" "$rc" "$((end - start))" "$before" \
    "$priv/leftovers.json" "${ENVBUILD_RESULT:-}" "${VALIDATION_WHEN:-before}" <<'EOF'
import json, math, os, sys
here, out, task_id, rc, wall, before, leftovers, result, when = sys.argv[1:]
sys.path.insert(0, here)
import result as envbuild_result
report = json.load(open(os.path.join(out, "report.json")))
task = next(t for t in report["tasks"] if t["uuid"] == task_id)


def p95(values):
    # nearest-rank percentile, as rally's own "95%ile" column
    if not values:
        return None
    s = sorted(values)
    return round(s[max(0, math.ceil(0.95 * len(s)) - 1)], 3)


scenarios = []
for sub in task["subtasks"]:
    for w in sub["workloads"]:
        its = w["data"]
        ok = [i["duration"] for i in its if not i.get("error")]
        scenarios.append({
            "name": next(iter(w["scenario"])),
            "iterations": len(its),
            "failures": sum(1 for i in its if i.get("error")),
            "duration_avg": round(sum(ok) / len(ok), 3) if ok else None,
            "duration_p95": p95(ok),
            "runner": w["runner"],
            "sla_passed": w["pass_sla"],
            "sla": [f"{c['criterion']}: {c['detail']}" for c in w["sla_results"].get("sla", [])],
            "load_duration": round(w["load_duration"], 3),
            "full_duration": round(w["full_duration"], 3),
        })
after = json.load(open(leftovers))
summary = {
    "task_id": task_id,
    "status": task["status"],
    "sla_passed": bool(task["pass_sla"]) and all(s["sla"] for s in scenarios),
    "scenarios": scenarios,
    "wall_seconds": int(wall),
    "users_before": json.loads(before)["users_total"],
    "leftovers": after,
}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
for s in scenarios:
    print(f"rally: {s['name']}: {s['iterations']} iterations, {s['failures']} failed, "
          f"avg {s['duration_avg']} s, p95 {s['duration_p95']} s")
print(f"rally: task {task_id} {task['status']}, SLA "
      f"{'passed' if summary['sla_passed'] else 'FAILED'}, {wall} s; leftovers "
      f"deleted: {sum(after['deleted'].values())}")
figures = {s["name"]: {k: s[k] for k in ("iterations", "failures", "duration_avg",
           "duration_p95")} for s in scenarios}
figures["sla_passed"] = summary["sla_passed"]
envbuild_result.merge(result, "rally", figures, when)
ok = (summary["sla_passed"] and task["status"] == "finished" and int(rc) == 0
      and all(s["iterations"] > 0 for s in scenarios))
sys.exit(0 if ok else 1)
EOF
