#!/bin/sh
# Service: one swift server (foreground): proxy N | account N | container N | object N.
# swift reads /etc/swift/swift.conf by a fixed path: the server runs in a mount namespace of
# its own (unshare -m, private propagation) where /etc is an overlay of the host's /etc (its
# upper layer in $ENVBUILD_RUN/ns/NAME) with $ENVBUILD_RUN/swift bind-mounted on /etc/swift.
# The host's /etc is never written; the mounts die with the process. Needs root.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "${ENVBUILD_ROOT:?}"
kind=${1:?usage: swift.sh proxy|account|container|object N}
n=${2:?usage: swift.sh KIND N}
venv=${AIO_VENV:-venv}
run=${ENVBUILD_RUN:?}
case $kind in
    proxy) main=swift.proxy.server ;;
    account) main=swift.account.server ;;
    container) main=swift.container.server ;;
    object) main=swift.obj.server ;;
    *) echo "swift.sh: unknown server $kind" >&2; exit 2 ;;
esac
ns=$run/ns/$kind-$n
rm -rf "$ns"
mkdir -p "$ns/upper" "$ns/work"
export PYTHONDONTWRITEBYTECODE=1
# -v: log to stderr (the service log) as well as syslog.
exec unshare -m --propagation private sh -c '
    set -eu
    mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1/upper,workdir=$1/work" /etc
    mkdir -p /etc/swift
    mount --bind "$2" /etc/swift
    shift 2
    exec "$@"' swift-ns "$ns" "$run/swift" "$venv/bin/python" -c "import sys; sys.argv[0] = 'swift-$kind-server'
from $main import main; main()" "$run/swift/$kind-server-$n.conf" -v
