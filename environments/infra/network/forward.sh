#!/bin/sh
# forward.sh — stage of infra's jumpbox: it forwards between its private links (each machine
# behind it has a link of its own: QEMU's links are point-to-point), so the machines reach
# each other (Jenkins pushes results to ElasticSearch) through it, and nothing else.
set -eu
echo 'net.ipv4.ip_forward = 1' >/etc/sysctl.d/90-envbuild-infra.conf
