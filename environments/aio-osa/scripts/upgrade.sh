#!/bin/sh
# upgrade.sh COMMIT — OSA's major upgrade (in the guest, as root): /opt/openstack-ansible at
# COMMIT (the next release's pinned tag commit), then scripts/run-upgrade.sh, which asks for
# confirmation on stdin (its own notice: echo "YES" for an automated run). run-upgrade.sh
# marks each finished playbook in /etc/openstack_deploy/upgrade-SERIES/, so a rerun resumes.
set -eu
[ $# -eq 1 ] || { echo "usage: upgrade.sh COMMIT" >&2; exit 2; }
cd /opt/openstack-ansible
git fetch origin
git checkout --detach "$1"
[ "$(git rev-parse HEAD)" = "$1" ]
echo YES | bash scripts/run-upgrade.sh
