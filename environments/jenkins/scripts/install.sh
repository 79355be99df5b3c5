#!/bin/sh
# Stage "install": Jenkins LTS at the pinned version from pkg.jenkins.io (the repository the
# "repository" stage added, its key pinned by fingerprint), held there, and not started by
# the package (the stage's VM is powered off next; the configure stage enables it).
# Needs ENVBUILD_VAR_JENKINS_VERSION; runs as root in the guest.
set -eu
version=${ENVBUILD_VAR_JENKINS_VERSION:?}
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "jenkins=$version"
apt-mark hold jenkins
systemctl stop jenkins.service 2>/dev/null || true
dpkg-query -W jenkins
