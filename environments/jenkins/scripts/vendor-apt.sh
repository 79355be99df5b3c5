#!/bin/sh
# vendor-apt.sh NAME FINGERPRINT — add the vendor apt repository of the stage's apt source NAME
# (`sources = [{ name = NAME, apt = "URL SUITE...", key = KEY_URL }]`, docs/spec.md "Sources").
# envbuild put the source's pinned files in $ENVBUILD_INPUTS/sources/NAME/ after checking them
# against the lock file: `key` (the signing key), `InRelease` or `Release` (the index the lock
# pins, checked against the repository just before the steps) and `repo` (the deb line's URL
# and suite). Runs as root in a Debian guest with gpg. Shared by jenkins, elk and infra.
#
#   NAME         the source; file names: /etc/apt/keyrings/NAME.asc, /etc/apt/sources.list.d/NAME.list
#   FINGERPRINT  40 hex digits: the primary key the key file must hold, and only it (what the
#                vendor publishes: the lock pins the key's bytes, this pins whose key it is)
#
# apt then checks the index's signature against this key alone (signed-by) and every .deb
# against the index's sha256s; the index apt downloaded must be the locked one byte for byte
# (a vendor that published between envbuild's check and this step is refused too), so the
# lock covers each byte installed. Exit 2 when the key is not the pinned one or the index moved.
set -eu
[ $# -eq 2 ] || { echo "usage: vendor-apt.sh NAME FINGERPRINT" >&2; exit 2; }
name=$1 want=$2
src=${ENVBUILD_INPUTS:?}/sources/$name
[ -f "$src/key" ] && [ -f "$src/repo" ] || {
    echo "vendor-apt.sh: $src has no key or repo: is \`$name\` an apt source of this stage?" >&2
    exit 2
}
if [ -f "$src/InRelease" ]; then index=InRelease; else index=Release; fi
got=$(gpg --batch --quiet --with-colons --show-keys "$src/key" 2>/dev/null | awk -F: '$1 == "fpr" { print $10; exit }')
keys=$(gpg --batch --quiet --with-colons --show-keys "$src/key" 2>/dev/null | grep -c '^pub:' || true)
if [ "$got" != "$want" ] || [ "$keys" != 1 ]; then
    echo "vendor-apt.sh: the locked key of $name is ${got:-none} ($keys primary keys), the spec pins $want." >&2
    echo "  The vendor may have rotated its key: check the fingerprint it publishes, update the spec, then \`envbuild lock ENV --update\`." >&2
    exit 2
fi
keyring=/etc/apt/keyrings/$name.asc
mkdir -p /etc/apt/keyrings
cp "$src/key" "$keyring"
chmod 644 "$keyring"
echo "deb [signed-by=$keyring] $(cat "$src/repo")" >"/etc/apt/sources.list.d/$name.list"
apt-get update -qq
matched=
for list in /var/lib/apt/lists/*_"$index"; do
    [ -f "$list" ] && cmp -s "$list" "$src/$index" && matched=$list
done
if [ -z "$matched" ]; then
    rm -f "/etc/apt/sources.list.d/$name.list"
    echo "vendor-apt.sh: apt downloaded an index of $name other than the locked $index: the vendor published since the lock." >&2
    echo "  Review it, then \`envbuild lock ENV --update\` and commit ENV.lock." >&2
    exit 2
fi
echo "vendor-apt.sh: $name: key $want, $(cat "$src/repo"), $index as locked"
