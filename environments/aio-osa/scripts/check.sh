#!/bin/sh
# check.sh — the deployment answers (in the guest, as root): from the utility container, as
# the quickstart's "Using a client" section does, the admin credentials OSA wrote issue a
# token and list the compute services, every one up.
set -eu
utility=$(lxc-ls -1 | grep utility | head -n 1)
[ -n "$utility" ] || { echo "check.sh: no utility container (lxc-ls)" >&2; exit 1; }
lxc-attach -n "$utility" -- sh -ec '
    . /root/openrc
    openstack token issue -f value -c expires
    openstack compute service list -f value -c Binary -c State
    if openstack compute service list -f value -c State | grep -vx up; then
        echo "check.sh: a compute service is not up" >&2
        exit 1
    fi
'
