#!/bin/sh
# Stage "proxy" of a jumpbox VM: /etc/nginx/nginx.conf from the spec's routes, checked by
# `nginx -t`, and Debian's nginx.service enabled (it starts at every boot).
# Needs ENVBUILD_VAR_ROUTES; proxy-conf.sh beside it; runs as root in the guest.
set -eu
conf=/etc/nginx/nginx.conf
sh "$(dirname "$0")/proxy-conf.sh" 0.0.0.0 - "${ENVBUILD_VAR_ROUTES:?}" >"$conf.new"
mv "$conf.new" "$conf"
# Debian's default site is not included by this config; remove it so nobody edits it.
rm -f /etc/nginx/sites-enabled/default
nginx -t
systemctl enable nginx.service
