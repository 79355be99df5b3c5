#!/bin/sh
# Take one keystone API out of NGINX's upstream, or put it back, without dropping a request:
# rewrite $ENVBUILD_RUN/nginx.conf, reload NGINX gracefully, and wait until every worker of the
# old configuration has exited. Old workers finish the requests they serve (some of them on
# the API being drained) before they exit, so once they are gone no request is in flight to a
# drained API and nothing will send it one: it can be stopped. Usage: sh upstream.sh drain|enable PORT
set -eu
action=${1:?usage: upstream.sh drain|enable PORT}
port=${2:?usage: upstream.sh drain|enable PORT}
run=${ENVBUILD_RUN:?}
conf=$run/nginx.conf
grep -q "server 127.0.0.1:$port " "$conf" || { echo "upstream.sh: no server on port $port in $conf" >&2; exit 1; }
# The server line is `server 127.0.0.1:PORT max_fails=0;`, plus ` down` while drained.
sed -i "/server 127\.0\.0\.1:$port /s/ down;/;/" "$conf"
case $action in
    drain)  sed -i "/server 127\.0\.0\.1:$port /s/;\s*\$/ down;/" "$conf" ;;
    enable) ;;
    *) echo "upstream.sh: unknown action $action" >&2; exit 2 ;;
esac
/usr/sbin/nginx -t -q -e stderr -p "$run/" -c "$conf"

master=$(cat "$run/nginx.pid")
workers() { ps -o pid= --ppid "$master" | tr -d ' '; }
old=$(workers)
/usr/sbin/nginx -s reload -e stderr -p "$run/" -c "$conf"
# The reload is asynchronous: the master starts workers with the new configuration, then asks
# the old ones to quit once idle. Wait for both (a request may take seconds under load).
limit=$((60 * 10))   # tenths of a second
waited=0
while :; do
    now=$(workers)
    new=0 left=
    for pid in $now; do
        case " $(echo $old) " in
            *" $pid "*) left="$left $pid" ;;
            *) new=$((new + 1)) ;;
        esac
    done
    [ "$new" -gt 0 ] && [ -z "$left" ] && break
    if [ "$waited" -ge "$limit" ]; then
        echo "upstream.sh: after 60 s, workers of the old configuration still serve:$left" >&2
        exit 1
    fi
    sleep 0.1
    waited=$((waited + 1))
done
echo "upstream.sh: $action 127.0.0.1:$port (old workers gone after $((waited / 10)).$((waited % 10)) s)"
grep "server 127.0.0.1:" "$conf"
