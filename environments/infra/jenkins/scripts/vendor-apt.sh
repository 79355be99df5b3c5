#!/bin/sh
# vendor-apt.sh NAME KEY_URL FINGERPRINT REPO — add a vendor's apt repository whose signing
# key is pinned by its fingerprint (what the vendor documents; the key file's own digest is
# not published). Runs as root in a Debian guest with curl and gpg.
#
#   NAME         file names: /etc/apt/keyrings/NAME.asc, /etc/apt/sources.list.d/NAME.list
#   KEY_URL      the vendor's key, https only
#   FINGERPRINT  40 hex digits: the primary key the downloaded file must hold, and only it
#   REPO         "URL SUITE COMPONENT..." of the repository
#
# apt then checks the repository's InRelease against this key alone (signed-by) and every
# .deb against the signed Packages index's sha256: the pin covers each byte installed.
# Exit 2 when the key cannot be fetched or is not the pinned one (the vendor may have
# rotated it: check the fingerprint they publish and update the spec's var).
set -eu
[ $# -eq 4 ] || { echo "usage: vendor-apt.sh NAME KEY_URL FINGERPRINT REPO" >&2; exit 2; }
name=$1 url=$2 want=$3 repo=$4
case $url in https://*) ;; *) echo "vendor-apt.sh: $url is not https" >&2; exit 2 ;; esac
host=${url#https://}
host=${host%%/*}
keyring=/etc/apt/keyrings/$name.asc
mkdir -p /etc/apt/keyrings
if ! curl -fsSL --proto =https --retry 3 -o "$keyring.new" "$url"; then
    rm -f "$keyring.new"
    echo "vendor-apt.sh: cannot download $url: $host is not reachable from this machine." >&2
    echo "  Build this environment on a machine whose VMs reach $host (docs/environments.md)." >&2
    exit 2
fi
got=$(gpg --batch --quiet --with-colons --show-keys "$keyring.new" 2>/dev/null | awk -F: '$1 == "fpr" { print $10; exit }')
keys=$(gpg --batch --quiet --with-colons --show-keys "$keyring.new" 2>/dev/null | grep -c '^pub:' || true)
if [ "$got" != "$want" ] || [ "$keys" != 1 ]; then
    rm -f "$keyring.new"
    echo "vendor-apt.sh: $url holds key ${got:-none} ($keys primary keys), the spec pins $want." >&2
    exit 2
fi
mv "$keyring.new" "$keyring"
chmod 644 "$keyring"
echo "deb [signed-by=$keyring] $repo" >"/etc/apt/sources.list.d/$name.list"
apt-get update -qq
echo "vendor-apt.sh: $name: key $want, $repo"
