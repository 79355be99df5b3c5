#!/bin/sh
# keystone-manage db_sync with the N+1 code (venv-next), as Keystone's upgrade guide orders it.
# Usage: sh db-sync.sh expand|migrate|contract|full|check
# expand/contract are online steps (N keeps serving); "full" (no flag) is the offline path of
# the all-at-once upgrade. "migrate" is a no-op since keystone moved to alembic; kept for older N.
set -eu
cd "${ENVBUILD_ROOT:?}"
export KEYSTONE_VENV=${KEYSTONE_VENV:-venv-next}
case ${1:?usage: db-sync.sh expand|migrate|contract|full|check} in
    expand) exec bin/keystone-manage db_sync --expand ;;
    migrate) exec bin/keystone-manage db_sync --migrate ;;
    contract) exec bin/keystone-manage db_sync --contract ;;
    full) exec bin/keystone-manage db_sync ;;
    check) exec bin/keystone-manage db_sync --check ;;
    *) echo "db-sync.sh: unknown step $1" >&2; exit 2 ;;
esac
