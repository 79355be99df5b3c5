#!/bin/sh
# Take one keystone API out of NGINX's upstream, or put it back, without dropping a request:
# rewrite $ENVBUILD_RUN/nginx.conf and reload NGINX gracefully (old workers finish what they
# serve). Usage: sh upstream.sh drain|enable PORT
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
/usr/sbin/nginx -s reload -e stderr -p "$run/" -c "$conf"
# The reload is asynchronous: wait until the master has started workers with the new config
# (they log nothing we can read cheaply), so give it a moment, then say what is in the pool.
sleep 1
echo "upstream.sh: $action 127.0.0.1:$port"
grep "server 127.0.0.1:" "$conf"
