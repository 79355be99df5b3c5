#!/bin/sh
# playbook.sh NAME — one step of OSA's AIO procedure (in the guest, as root), e.g.
# `setup_hosts`: `openstack-ansible openstack.osa.NAME` from /opt/openstack-ansible, as the
# quickstart runs it. Its output is the stage's log.
set -eu
[ $# -eq 1 ] || { echo "usage: playbook.sh NAME" >&2; exit 2; }
case $1 in
    setup_hosts | setup_infrastructure | setup_openstack) ;;
    *) echo "playbook.sh: '$1' is not an AIO step (setup_hosts, setup_infrastructure, setup_openstack)" >&2; exit 2 ;;
esac
cd /opt/openstack-ansible
openstack-ansible "openstack.osa.$1"
