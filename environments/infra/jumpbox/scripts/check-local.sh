#!/bin/sh
# Stage "proxy" of the local jumpbox: copies the scripts into share/ and checks, with
# `nginx -t`, the config the spec's routes give (stand-in port numbers: the real ones are
# chosen at every `up`, and prestart.sh renders and checks it again with them).
set -eu
cd "${ENVBUILD_ROOT:?}"
rm -rf share && mkdir -p share
cp -r "${ENVBUILD_INPUTS:?}/scripts" share/scripts
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/tmp"
ENVBUILD_PORT_JENKINS=8080 ENVBUILD_PORT_KIBANA=5601 \
    sh share/scripts/proxy-conf.sh 127.0.0.1 "$tmp" "${ENVBUILD_VAR_LOCAL_ROUTES:?}" >"$tmp/nginx.conf"
/usr/sbin/nginx -t -q -e stderr -p "$tmp/" -c "$tmp/nginx.conf"
