#!/bin/sh
# Prestart hook (every `up`): set the real admin password and endpoint URLs,
# render keystone's runtime config (its cache on this up's memcached), then
# render and test $ENVBUILD_RUN/nginx.conf from ../templates/nginx.conf.in
# (relative to this script: works from $ENVBUILD_INPUTS or from a copy of
# scripts/ + templates/ inside the machine).
set -eu
here=$(cd "$(dirname "$0")" && pwd)   # before the cd: $0 may be relative
cd "${ENVBUILD_ROOT:?}"
run=${ENVBUILD_RUN:?}
: "${ENVBUILD_PORT_PUBLIC:?}" "${ENVBUILD_PORT_API1:?}" "${ENVBUILD_PORT_API2:?}" "${ENVBUILD_PORT_MEMCACHED:?}"

# bootstrap is idempotent: on an existing DB it resets the admin password when
# it differs (and enables the user) and rewrites the URL of existing endpoints.
# The password goes through the environment (OS_BOOTSTRAP_PASSWORD), never argv.
OS_BOOTSTRAP_PASSWORD=${ENVBUILD_SECRET_ADMIN_PASSWORD:?}
export OS_BOOTSTRAP_PASSWORD
url=http://127.0.0.1:$ENVBUILD_PORT_PUBLIC/v3
bin/keystone-manage bootstrap --bootstrap-region-id RegionOne \
    --bootstrap-public-url "$url" --bootstrap-internal-url "$url" \
    --bootstrap-admin-url "$url"
unset OS_BOOTSTRAP_PASSWORD

# nginx.conf: every writable path points into $ENVBUILD_RUN. As root, nginx
# would switch its workers to "nobody", who cannot write there: keep them as
# the current user (for non-root the directive is pointless and only warns).
user_line=
[ "$(id -u)" -ne 0 ] || user_line="user $(id -un) $(id -gn);"
esc() { printf '%s\n' "$1" | sed 's/[\\|&]/\\&/g'; }   # for sed's replacement
mkdir -p "$run/nginx-tmp"
sed -e "s|@RUN@|$(esc "$run")|g" \
    -e "s|@USER_LINE@|$user_line|" \
    -e "s|@PORT_PUBLIC@|$ENVBUILD_PORT_PUBLIC|g" \
    -e "s|@PORT_API1@|$ENVBUILD_PORT_API1|g" \
    -e "s|@PORT_API2@|$ENVBUILD_PORT_API2|g" \
    "$here/../templates/nginx.conf.in" >"$run/nginx.conf"
# -e stderr: otherwise nginx first opens its compiled-in /var/log path.
/usr/sbin/nginx -t -q -e stderr -p "$run/" -c "$run/nginx.conf"

# keystone's cache, shared by both APIs (api.sh loads this after keystone.conf).
# Every up starts an empty memcached, so nothing cached outlives the deployment.
cat >"$run/keystone-runtime.conf" <<CONF
# Rendered by share/scripts/prestart.sh at every up.
[cache]
enabled = true
backend = dogpile.cache.pymemcache
memcache_servers = 127.0.0.1:$ENVBUILD_PORT_MEMCACHED
CONF
