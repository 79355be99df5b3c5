#!/bin/sh
# validate.sh OUT [TOOL...] — the validation phases of aio-lite's upgrade flows.
#
# Runs each named tool against the running aio-lite, in order, even when an earlier one
# failed: `tempest` (tempest-smoke.sh: identity smoke tests) and `rally`
# (rally-keystone.sh: the Keystone task). OUT/tempest and OUT/rally get their outputs.
# The flows pass the var `validation` (default "tempest rally"); `--var validation=none`
# (or an empty list) runs nothing and says so. Under `envbuild test` each tool merges its
# figures into $ENVBUILD_RESULT with VALIDATION_WHEN (before|after) from the phase's env.
# Exit status: the worst of the tools' (2 = setup error, 1 = a test or SLA failed).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { echo "usage: validate.sh OUT [tempest] [rally] [none]" >&2; exit 2; }
out=$1
shift
worst=0
ran=0
# A flow's `{{ validation }}` arrives as one word (placeholders are data, docs/spec.md): split
# the tools on blanks here. Tool names hold no glob characters.
# shellcheck disable=SC2048
for tool in $*; do
    case $tool in
        tempest) script=tempest-smoke.sh ;;
        rally) script=rally-keystone.sh ;;
        none) continue ;;
        *) echo "validate.sh: unknown tool \`$tool\` (tempest, rally or none)" >&2; exit 2 ;;
    esac
    rc=0
    sh "$here/$script" "$out" || rc=$?
    [ "$rc" -le "$worst" ] || worst=$rc
    ran=$((ran + 1))
done
[ "$ran" -gt 0 ] || echo "validate.sh: no validation tool selected (var validation = \"$*\")"
exit "$worst"
