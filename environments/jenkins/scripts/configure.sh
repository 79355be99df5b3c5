#!/bin/sh
# Stage "configure": configuration as code (casc/ into /etc/jenkins/casc), no setup wizard,
# the per-boot secrets unit, and jenkins.service enabled. Vars: ENVBUILD_VAR_JENKINS_URL,
# ENVBUILD_VAR_REPO_URL, ENVBUILD_VAR_CACHE_URL, ENVBUILD_VAR_TRUSTED_KEY.
set -eu
# The role folder (this script is in its scripts/): environments/NAME/ or infra/NAME/.
in=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p /etc/jenkins/casc
install -m 644 "$in/casc/jenkins.yaml" "$in/casc/envbuild-job.groovy" /etc/jenkins/casc/
install -m 755 "$in/scripts/secrets.sh" /usr/local/sbin/envbuild-jenkins-secrets
mkdir -p /etc/systemd/system/jenkins.service.d
{
    echo "[Service]"
    echo "Environment=CASC_JENKINS_CONFIG=/etc/jenkins/casc/jenkins.yaml"
    echo "Environment=JAVA_OPTS=-Djava.awt.headless=true -Djenkins.install.runSetupWizard=false"
    echo "Environment=JENKINS_URL=${ENVBUILD_VAR_JENKINS_URL:?}"
    echo "Environment=ENVBUILD_REPO_URL=${ENVBUILD_VAR_REPO_URL:?}"
    echo "Environment=ENVBUILD_CACHE_URL=${ENVBUILD_VAR_CACHE_URL:?}"
    echo "Environment=ENVBUILD_TRUSTED_KEY=${ENVBUILD_VAR_TRUSTED_KEY:?}"
    # The admin password, made at every boot into tmpfs (never on the disk, never cached).
    echo "ExecStartPre=+/usr/local/sbin/envbuild-jenkins-secrets"
    echo "EnvironmentFile=-/run/envbuild-jenkins/secrets.env"
} >/etc/systemd/system/jenkins.service.d/envbuild.conf
systemctl enable jenkins.service
