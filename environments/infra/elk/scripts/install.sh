#!/bin/sh
# Stage "install": ElasticSearch and Kibana at the pinned version from Elastic's apt
# repository, held there. Needs ENVBUILD_VAR_ELASTIC_VERSION; runs as root in the guest.
#
# The Debian package of ElasticSearch 8 configures security at install: it generates the
# `elastic` password (printed to the installing terminal), TLS certificates and a keystore.
# None of it may land in a cached stage or its log: the output goes to a file that is
# deleted, and configure.sh replaces the generated files (security is off: see
# docs/environments.md, "elk").
set -eu
version=${ENVBUILD_VAR_ELASTIC_VERSION:?}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "elasticsearch=$version" "kibana=$version" >"$log" 2>&1; then
    # The log may hold the generated password: show only apt's own error lines.
    grep -E '^(E:|W:)' "$log" >&2 || true
    echo "install.sh: apt-get install elasticsearch=$version kibana=$version failed" >&2
    exit 1
fi
apt-mark hold elasticsearch kibana
rm -rf /etc/elasticsearch/certs
rm -f /etc/elasticsearch/elasticsearch.keystore
/usr/share/elasticsearch/bin/elasticsearch-keystore create >/dev/null
chown root:elasticsearch /etc/elasticsearch/elasticsearch.keystore
chmod 660 /etc/elasticsearch/elasticsearch.keystore
dpkg-query -W elasticsearch kibana
