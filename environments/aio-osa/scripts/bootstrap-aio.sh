#!/bin/sh
# Stage "bootstrap-aio" of aio-osa (in the guest, as root): OSA's scripts/bootstrap-aio.sh
# for SCENARIO=$ENVBUILD_VAR_SCENARIO, given envbuild's openstack_user_config.yml through the
# bootstrap's own hook (`openstack_user_config_overrides`, an extra-vars file in
# BOOTSTRAP_OPTS), then envbuild's user_variables_envbuild.yml beside the AIO's. Fails when
# the openstack_user_config.yml OSA wrote does not hold envbuild's, key by key.
set -eu
inputs=${ENVBUILD_INPUTS:?}
config=$inputs/config
overrides=/root/envbuild-bootstrap-overrides.yml
python3 - "$config/openstack_user_config.yml" "$overrides" <<'PY'
import sys, yaml
with open(sys.argv[1]) as f:
    config = yaml.safe_load(f)
with open(sys.argv[2], "w") as f:
    yaml.safe_dump({"openstack_user_config_overrides": config}, f, default_flow_style=False)
PY
cd /opt/openstack-ansible
SCENARIO=${ENVBUILD_VAR_SCENARIO:?} BOOTSTRAP_OPTS="@$overrides" scripts/bootstrap-aio.sh
install -m 644 "$config/user_variables_envbuild.yml" /etc/openstack_deploy/user_variables_envbuild.yml
python3 - "$config/openstack_user_config.yml" /etc/openstack_deploy/openstack_user_config.yml <<'PY'
import sys, yaml
with open(sys.argv[1]) as f:
    wanted = yaml.safe_load(f)
with open(sys.argv[2]) as f:
    written = yaml.safe_load(f)
wrong = [key for key, value in wanted.items() if written.get(key) != value]
if wrong:
    sys.exit(f"bootstrap-aio.sh: {sys.argv[2]} differs from envbuild's in: {', '.join(wrong)}")
PY
# The secrets are OSA's own, generated on this machine (scripts/pw-token-gen.py): none is a default.
grep -q '^keystone_auth_admin_password: .\{16,\}' /etc/openstack_deploy/user_secrets.yml
