#!/bin/sh
# sync.sh [--check] — infra's copies of the machine folders it shares with the single-machine
# environments, and rally's copy of aio-lite's Rally lock and install script.
#
# A stage's inputs may not leave its environment's folder (a symlink out is refused, docs/
# spec.md), so infra.toml's machines take copies of environments/{jumpbox,jenkins,elk,rally}/
# and rally takes copies of aio-lite's files. Edit the originals, then run this; `--check`
# (tests/infra.rs) fails, naming the files, when a copy differs from its original.
set -eu
envs=$(cd "$(dirname "$0")/.." && pwd)
# COPY ORIGINAL (paths under environments/)
pairs="
infra/jumpbox/scripts jumpbox/scripts
infra/jenkins jenkins
infra/elk elk
infra/rally rally
rally/validation/rally.txt aio-lite/validation/rally.txt
rally/validation/scripts/install-tool.sh aio-lite/validation/scripts/install-tool.sh
"
check=false
[ "${1:-}" != --check ] || check=true
status=0
echo "$pairs" | while read -r copy original; do
    [ -n "$copy" ] || continue
    if $check; then
        diff -r "$envs/$original" "$envs/$copy" >/dev/null || {
            echo "sync.sh: environments/$copy differs from environments/$original: run environments/infra/sync.sh" >&2
            exit 1
        }
    else
        rm -rf "${envs:?}/$copy"
        mkdir -p "$(dirname "$envs/$copy")"
        cp -r "$envs/$original" "$envs/$copy"
    fi
done || status=1
exit $status
