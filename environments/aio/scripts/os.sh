#!/bin/sh
# os.sh TOOL [ARGS...] — run one OpenStack program of this machine with its configuration,
# without the venv's console scripts (absolute shebangs, not relocatable).
#   AIO_VENV  the release's venv (default venv; venv-next = N+1)
#   AIO_CONF  the rendered config folder (default $ENVBUILD_RUN/etc/$AIO_VENV, see render.py)
# Tools: keystone-manage glance-manage placement-manage nova-manage nova-status
#   neutron-db-manage nova-conductor nova-scheduler nova-compute HOST (HOST: compute1|compute2)
# cwd: the machine root. exec's the program (signals reach it directly).
set -eu
cd "${ENVBUILD_ROOT:?}"
venv=${AIO_VENV:-venv}
conf=${AIO_CONF:-${ENVBUILD_RUN:?}/etc/$venv}
tool=${1:?usage: os.sh TOOL [ARGS...]}
shift
case $tool in
    keystone-manage) main=keystone.cmd.manage; set -- --config-file "$conf/keystone/keystone.conf" "$@" ;;
    glance-manage) main=glance.cmd.manage; set -- --config-file "$conf/glance/glance-api.conf" "$@" ;;
    placement-manage) main=placement.cmd.manage; set -- --config-file "$conf/placement/placement.conf" "$@" ;;
    nova-manage) main=nova.cmd.manage; set -- --config-file "$conf/nova/nova.conf" "$@" ;;
    nova-status) main=nova.cmd.status; set -- --config-file "$conf/nova/nova.conf" "$@" ;;
    nova-conductor) main=nova.cmd.conductor; set -- --config-file "$conf/nova/nova.conf" "$@" ;;
    nova-scheduler) main=nova.cmd.scheduler; set -- --config-file "$conf/nova/nova.conf" "$@" ;;
    nova-compute)
        host=${1:?usage: os.sh nova-compute HOST}
        shift
        main=nova.cmd.compute
        set -- --config-file "$conf/nova/nova.conf" --config-file "$conf/nova/$host.conf" "$@" ;;
    neutron-db-manage)
        main=neutron.db.migration.cli
        set -- --config-file "$conf/neutron/neutron.conf" \
            --config-file "$conf/neutron/plugins/ml2/ml2_conf.ini" "$@" ;;
    *) echo "os.sh: unknown tool $tool" >&2; exit 2 ;;
esac
export PYTHONDONTWRITEBYTECODE=1
exec "$venv/bin/python" -c "import sys; sys.argv[0] = '$tool'
from $main import main; sys.exit(main())" "$@"
