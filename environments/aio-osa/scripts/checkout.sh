#!/bin/sh
# Stage "checkout" of aio-osa (in the guest, as root): openstack-ansible at the pinned commit
# in /opt/openstack-ansible, and this environment's guest scripts in /usr/local/lib/envbuild-osa.
# Needs ENVBUILD_VAR_OSA_REPO, ENVBUILD_VAR_OSA_COMMIT (40 hex digits: a tag or branch is
# refused, it could move).
set -eu
repo=${ENVBUILD_VAR_OSA_REPO:?}
commit=${ENVBUILD_VAR_OSA_COMMIT:?}
case $commit in
    *[!0-9a-f]*) echo "checkout.sh: osa_commit '$commit' is not a commit id" >&2; exit 2 ;;
esac
[ ${#commit} -eq 40 ] || { echo "checkout.sh: osa_commit must be the 40-digit commit id" >&2; exit 2; }
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get -y install git python3-yaml
rm -rf /opt/openstack-ansible
git clone "$repo" /opt/openstack-ansible
git -C /opt/openstack-ansible checkout --detach "$commit"
[ "$(git -C /opt/openstack-ansible rev-parse HEAD)" = "$commit" ]
install -d /usr/local/lib/envbuild-osa
install -m 755 "$(dirname "$0")"/*.sh /usr/local/lib/envbuild-osa/
