#!/bin/sh
# Service: nginx (foreground, "daemon off;") load-balancing both APIs on
# 127.0.0.1:$ENVBUILD_PORT_PUBLIC, with the config prestart.sh rendered.
# Stops on SIGTERM/SIGINT (fast) or SIGQUIT (graceful).
set -eu
run=${ENVBUILD_RUN:?}
exec /usr/sbin/nginx -e stderr -p "$run/" -c "$run/nginx.conf"
