#!/bin/sh
# Stage "plugins": the plugins of plugins.txt (and the lowest versions of their dependencies
# those plugins require: `--latest false`) into /var/lib/jenkins/plugins, by the Jenkins
# Plugin Installation Manager, which checks each download's sha256 against the update
# center's signed metadata. Vars: ENVBUILD_VAR_PLUGIN_MANAGER_VERSION.
set -eu
# The role folder (this script is in its scripts/): environments/NAME/ or infra/NAME/.
in=$(cd "$(dirname "$0")/.." && pwd)
tool=${ENVBUILD_VAR_PLUGIN_MANAGER_VERSION:?}
jar=/usr/local/lib/jenkins-plugin-manager-$tool.jar
url=https://github.com/jenkinsci/plugin-installation-manager-tool/releases/download/$tool/jenkins-plugin-manager-$tool.jar
if [ ! -f "$jar" ]; then
    curl -fsSL --proto =https --retry 3 -o "$jar.new" "$url" || {
        echo "plugins.sh: cannot download $url (github.com unreachable from this machine)" >&2
        exit 2
    }
    mv "$jar.new" "$jar"
fi
mkdir -p /var/lib/jenkins/plugins
java -jar "$jar" --war /usr/share/java/jenkins.war --plugin-download-directory /var/lib/jenkins/plugins \
    --plugin-file "$in/plugins.txt" --latest false --verbose
chown -R jenkins:jenkins /var/lib/jenkins/plugins
