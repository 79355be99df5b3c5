#!/bin/sh
# route.sh GATEWAY — stage of a machine behind infra's jumpbox: the rest of the private
# network (10.0.0.0/24) through the jumpbox's address on this machine's one link. The link's
# own config is written by envbuild at every boot (/run/systemd/network/20-link0.network);
# this drop-in adds the route to it.
set -eu
gateway=${1:?usage: route.sh GATEWAY}
case $gateway in *[!0-9.]* | '') echo "route.sh: '$gateway' is not an IPv4 address" >&2; exit 2 ;; esac
mkdir -p /etc/systemd/network/20-link0.network.d
printf '[Route]\nDestination=10.0.0.0/24\nGateway=%s\n' "$gateway" \
    >/etc/systemd/network/20-link0.network.d/envbuild-infra.conf
