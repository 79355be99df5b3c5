#!/bin/sh
# envbuild-elk-setup.service, at every boot: waits for ElasticSearch and Kibana, then puts
# the two index templates (PUT _index_template/NAME: replaces them) and imports the
# dashboard (overwrite=true). Idempotent. Argument: the machine's private address.
set -eu
address=${1:?usage: setup.sh ADDRESS}
here=/usr/local/share/envbuild-elk
es=http://$address:9200
kibana=http://$address:5601
wait_for() {
    i=0
    until curl -fsS -o /dev/null "$1"; do
        i=$((i + 1))
        [ "$i" -lt 180 ] || { echo "setup.sh: $1 never answered" >&2; exit 1; }
        sleep 2
    done
}
wait_for "$es/_cluster/health?wait_for_status=yellow&timeout=5s"
for name in upgrade_test upgrade_status_log; do
    curl -fsS -X PUT -H 'Content-Type: application/json' \
        --data-binary "@$here/$name.json" "$es/_index_template/envbuild_$name" >/dev/null
done
wait_for "$kibana/api/status"
curl -fsS -X POST -H 'kbn-xsrf: envbuild' \
    -F "file=@$here/dashboard.ndjson" "$kibana/api/saved_objects/_import?overwrite=true" >/dev/null
echo "setup.sh: index templates and dashboard loaded"
