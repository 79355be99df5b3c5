#!/bin/sh
# upgrade.sh STEP — the database and check steps of the upgrade flows, with the N+1 code
# (AIO_VENV, default venv-next), as each project's upgrade guide orders them. cwd: the root.
#   keystone-expand      keystone-manage db_sync --expand, --migrate (N keeps serving)
#   keystone-contract    keystone-manage db_sync --contract, then --check (exit 0 = done)
#   glance-expand        glance-manage db expand, db migrate (N keeps serving)
#   glance-contract      glance-manage db contract
#   placement-sync       placement-manage db sync (placement's migrations are additive)
#   nova-db-sync         nova-manage api_db sync, db sync (N keeps serving), then
#                        nova-status upgrade check (warnings allowed, failures not)
#   nova-check           nova-status upgrade check
#   nova-online          nova-manage db online_data_migrations (until nothing is left)
#   neutron-expand       neutron-db-manage upgrade --expand (N keeps serving)
#   neutron-contract     neutron-db-manage upgrade --contract
#   offline              all-at-once: every db sync above, services stopped
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "${ENVBUILD_ROOT:?}"
export AIO_VENV=${AIO_VENV:-venv-next}
os() { sh "$here/os.sh" "$@"; }
# nova-status: 0 = success, 1 = warning, 2 = failure, 255 = error.
nova_check() {
    rc=0
    os nova-status upgrade check || rc=$?
    [ "$rc" -le 1 ] || { echo "upgrade.sh: nova-status upgrade check failed ($rc)" >&2; exit 1; }
}
case ${1:?usage: upgrade.sh STEP (see the header)} in
    keystone-expand) os keystone-manage db_sync --expand; os keystone-manage db_sync --migrate ;;
    keystone-contract) os keystone-manage db_sync --contract; os keystone-manage db_sync --check ;;
    glance-expand) os glance-manage db expand; os glance-manage db migrate ;;
    glance-contract) os glance-manage db contract ;;
    placement-sync) os placement-manage db sync ;;
    nova-db-sync) os nova-manage api_db sync; os nova-manage db sync; nova_check ;;
    nova-check) nova_check ;;
    nova-online) os nova-manage db online_data_migrations ;;
    neutron-expand) os neutron-db-manage upgrade --expand ;;
    neutron-contract) os neutron-db-manage upgrade --contract ;;
    offline)
        os keystone-manage db_sync
        os glance-manage db_sync
        os placement-manage db sync
        os nova-manage api_db sync
        os nova-manage db sync
        os neutron-db-manage upgrade heads
        ;;
    *) echo "upgrade.sh: unknown step $1" >&2; exit 2 ;;
esac
