#!/bin/sh
# Prestart of the local jumpbox, at every `up`: $ENVBUILD_RUN/nginx.conf from the spec's
# local routes and this up's ports, checked by `nginx -t`.
set -eu
run=${ENVBUILD_RUN:?}
mkdir -p "$run/tmp"
sh share/scripts/proxy-conf.sh 127.0.0.1 "$run" "${ENVBUILD_VAR_LOCAL_ROUTES:?}" >"$run/nginx.conf"
# -e stderr: otherwise nginx first opens its compiled-in /var/log path.
/usr/sbin/nginx -t -q -e stderr -p "$run/" -c "$run/nginx.conf"
