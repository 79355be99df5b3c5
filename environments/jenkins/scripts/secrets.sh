#!/bin/sh
# Before jenkins.service, at every boot (as root): the admin password, 32 random
# characters, in /run/envbuild-jenkins (tmpfs, root only) for configuration-as-code's
# ${JENKINS_ADMIN_PASSWORD}. Read it with `envbuild ssh jenkins jenkins -- cat
# /run/envbuild-jenkins/admin-password`. Kept for the boot: a restart does not change it.
set -eu
dir=/run/envbuild-jenkins
[ ! -s "$dir/secrets.env" ] || exit 0
umask 077
mkdir -p "$dir"
password=$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32)
printf '%s\n' "$password" >"$dir/admin-password"
printf 'JENKINS_ADMIN_PASSWORD=%s\n' "$password" >"$dir/secrets.env"
