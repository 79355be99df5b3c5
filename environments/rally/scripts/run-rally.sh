#!/bin/sh
# run-rally.sh OUT — the Rally tasks named by $ENVBUILD_VAR_TASKS (space-separated names of
# tasks/NAME.yaml) against the cloud $ENVBUILD_VAR_CLOUD of the clouds.yaml at
# $ENVBUILD_VAR_CLOUDS_YAML (e.g. the one `envbuild creds aio-lite` writes), one after the
# other. Runtime script of the `run` flow (cwd = the machine root, venv-rally/ built by the
# "rally" stage); $ENVBUILD_VAR_TASK_ARGS is a JSON dict of task args for every task.
#
# Writes OUT/rally/NAME/: report.json and report.html (Rally's own reports), summary.json
# (per scenario: iterations, failures, mean and p95 duration, SLA), task.yaml, rally.log.
# Merges {"rally": {NAME/SCENARIO: figures, ..., "sla_passed"}, "when": "after"} into
# $ENVBUILD_RESULT for summary.json and junit.xml.
# The password travels from clouds.yaml to Rally in the environment only; Rally's database,
# config and HOME (which hold it) live in a private folder under $ENVBUILD_RUN, deleted at
# exit. Exit 0 when every task finished and every SLA passed, 1 otherwise, 2 for bad input
# (no clouds.yaml, no such cloud or task, no venv).
set -eu
[ $# -eq 1 ] || { echo "usage: run-rally.sh OUT" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
root=$(pwd)
py=$root/venv-rally/bin/python
[ -x "$py" ] || { echo "run-rally.sh: no venv-rally in $root (the rally stage builds it)" >&2; exit 2; }
clouds=${ENVBUILD_VAR_CLOUDS_YAML:-}
cloud=${ENVBUILD_VAR_CLOUD:?}
tasks=${ENVBUILD_VAR_TASKS:?}
[ -n "$clouds" ] || {
    echo "run-rally.sh: no clouds.yaml: run \`envbuild creds ENV\` and pass --var clouds_yaml=PATH" >&2
    exit 2
}
[ -f "$clouds" ] || { echo "run-rally.sh: clouds_yaml $clouds does not exist" >&2; exit 2; }
for task in $tasks; do
    [ -f "$here/../tasks/$task.yaml" ] || {
        echo "run-rally.sh: no task $task (tasks/: $(cd "$here/../tasks" && ls | sed 's/\.yaml$//' | tr '\n' ' '))" >&2
        exit 2
    }
done
mkdir -p "$1" "${ENVBUILD_RUN:?}"
out=$(cd "$1" && pwd)/rally
rm -rf "$out"
mkdir -p "$out"
priv=$(mktemp -d "$ENVBUILD_RUN/rally.XXXXXX")
trap 'rm -rf "$priv"' EXIT
trap 'exit 130' INT TERM
mkdir -p "$priv/home"
cat >"$priv/rally.conf" <<CONF
[DEFAULT]
use_stderr = true
[database]
connection = sqlite:///$priv/rally.sqlite
CONF
rally() {
    HOME="$priv/home" PYTHONDONTWRITEBYTECODE=1 "$py" -m rally.cli.main --config-file "$priv/rally.conf" "$@"
}

# OS_* from clouds.yaml, for `rally deployment create --fromenv` (and the leak check).
"$py" "$here/clouds-env.py" "$clouds" "$cloud" >"$priv/os.env" || exit 2
set -a
. "$priv/os.env"
set +a
log=$out/rally.log
{
    rally db create
    rally deployment create --fromenv --name "$cloud"
} >>"$log" 2>&1 || { echo "run-rally.sh: rally setup failed, see $log" >&2; exit 2; }
password=$OS_PASSWORD
unset OS_PASSWORD

rc=0
args=${ENVBUILD_VAR_TASK_ARGS:-'{}'}
for task in $tasks; do
    dir=$out/$task
    mkdir -p "$dir"
    cp "$here/../tasks/$task.yaml" "$dir/task.yaml"
    rally task start --task "$dir/task.yaml" --task-args "$args" --tag "$task" >>"$dir/rally.log" 2>&1 || rc=1
    uuid=$(sed -n 's/^RALLY_TASK=//p' "$priv/home/.rally/globals" 2>/dev/null || true)
    if [ -z "$uuid" ]; then
        echo "run-rally.sh: task $task was not created, see $dir/rally.log" >&2
        rc=1
        continue
    fi
    rally task report --uuid "$uuid" --json --out "$dir/report.json" >>"$dir/rally.log" 2>&1 || rc=1
    rally task report --uuid "$uuid" --html-static --out "$dir/report.html" >>"$dir/rally.log" 2>&1 || true
    "$py" "$here/summarize.py" "$dir" "$uuid" || rc=1
    rm -f "$priv/home/.rally/globals"
done

printf '%s\n' "$password" >"$priv/pw"
if grep -rqF -f "$priv/pw" "$out"; then
    echo "run-rally.sh: the password appears in $out" >&2
    rc=1
fi
"$py" "$here/summarize.py" --merge "$out" "$tasks" "${ENVBUILD_RESULT:-}" || rc=1
exit "$rc"
