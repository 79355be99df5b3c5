#!/bin/sh
# Stage "configure": elasticsearch.yml and kibana.yml for this machine's private address,
# the JVM heap, the index templates and the Kibana dashboard, loaded at every boot by
# envbuild-elk-setup.service once both answer. Vars: ENVBUILD_VAR_ELK_ADDRESS,
# ENVBUILD_VAR_ES_HEAP, ENVBUILD_VAR_KIBANA_PUBLIC_URL.
set -eu
# The role folder (this script is in its scripts/): environments/NAME/ or infra/NAME/.
in=$(cd "$(dirname "$0")/.." && pwd)
address=${ENVBUILD_VAR_ELK_ADDRESS:?}
heap=${ENVBUILD_VAR_ES_HEAP:?}
public=${ENVBUILD_VAR_KIBANA_PUBLIC_URL:?}
case $address in *[!0-9.]* | '') echo "configure.sh: elk_address '$address' is not IPv4" >&2; exit 2 ;; esac
case $heap in *[!0-9gm]* | '') echo "configure.sh: es_heap '$heap' is not like 1g" >&2; exit 2 ;; esac
case $public in http://* | https://*) ;; *) echo "configure.sh: kibana_public_url '$public' is not a URL" >&2; exit 2 ;; esac

sed "s|@ADDRESS@|$address|g" "$in/config/elasticsearch.yml" >/etc/elasticsearch/elasticsearch.yml
printf -- '-Xms%s\n-Xmx%s\n' "$heap" "$heap" >/etc/elasticsearch/jvm.options.d/heap.options
sed -e "s|@ADDRESS@|$address|g" -e "s|@PUBLIC_URL@|$public|g" "$in/config/kibana.yml" >/etc/kibana/kibana.yml

mkdir -p /usr/local/share/envbuild-elk
cp "$in"/index-templates/*.json "$in/kibana/dashboard.ndjson" "$in/scripts/setup.sh" /usr/local/share/envbuild-elk/
echo "ELK_ADDRESS=$address" >/etc/default/envbuild-elk
install -m 644 "$in/config/envbuild-elk-setup.service" /etc/systemd/system/
systemctl enable elasticsearch.service kibana.service envbuild-elk-setup.service
