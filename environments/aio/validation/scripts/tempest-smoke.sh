#!/bin/sh
# tempest-smoke.sh OUT — Tempest smoke tests (identity, image, compute, object storage) against this aio.
#
# Runtime script (test time, cwd = machine root, a running aio):
#   needs ENVBUILD_PORT_KEYSTONE, ENVBUILD_SECRET_ADMIN_PASSWORD, ENVBUILD_RUN
#   (e.g. `envbuild exec aio controller -- sh share/validation/tempest-smoke.sh OUT`)
#   and venv-tempest/ from the "tempest" stage.
# Optional environment:
#   TEMPEST_REGEX        stestr selection (default: the smoke-tagged tests of tempest.api.
#                        identity, image, compute and object_storage)
#   TEMPEST_CONCURRENCY  workers (default 2)
#   TEMPEST_VENV         venv folder in the machine root (default venv-tempest)
#   ENVBUILD_RESULT      set by `envbuild test`: {"smoke": {passed, failed,
#                        skipped}, "when": VALIDATION_WHEN (before|after,
#                        default before)} is merged into that file
# Writes OUT/tempest/:
#   results.json     {passed, failed, skipped, wall_seconds, leftovers,
#                    tests: [{name, status, duration[, reason]}]}
#   results.subunit  the raw subunit v2 stream of the run
#   .stestr/         stestr's repository (the workspace is OUT/tempest itself)
#   run.log          tempest run's console output; tempest.log: tempest's own log
#   tempest.conf     the configuration used, password replaced by ***
# The real tempest.conf (it holds the admin password), HOME and the lock dir live
# in a private dir under $ENVBUILD_RUN, deleted at exit. Users, projects, ...
# named "tempest-*" still there after the run (a failed tearDown) are deleted
# and counted in results.json. Companions, found next to this script:
# tempest-exclude.txt, subunit2json.py, keystone-leftovers.py.
# Exit status: 0 if tests ran and none failed; 1 if a test failed or none ran;
# 2 for a usage or setup error (keystone unreachable, wrong password, no venv).
set -eu
here=$(cd "$(dirname "$0")" && pwd)   # before any cd: $0 may be relative
. "$here/common.sh"
# Sets root, out, port, py and priv (private, deleted at exit); checks keystone.
validation_setup tempest "${TEMPEST_VENV:-venv-tempest}" "$@"
auth_url=http://127.0.0.1:$port/v3
# Default: the smoke-tagged identity tests (tempest's --smoke and --regex are
# mutually exclusive, so the smoke attribute is part of the regex).
regex=${TEMPEST_REGEX:-'^tempest\.api\.(identity|image|compute|object_storage)\..*\bsmoke\b'}
# The image the compute tests boot (resources.py setup uploads it).
image=$(python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import aio_client as c
t, _ = c.token(); print(c.find_image(t, "aio-tiny") or "")' "$here/../scripts")
[ -n "$image" ] || { echo "tempest-smoke.sh: no image aio-tiny (resources.py setup)" >&2; exit 2; }
# 2 workers: MariaDB takes concurrent writes (aio-lite's SQLite could not); more would
# only fight the probes for the 2 cores.
concurrency=${TEMPEST_CONCURRENCY:-2}

# Private, per-run: tempest.conf (password), HOME (stestr reads ~/.stestr.yaml,
# tempest may create ~/.tempest), the oslo.concurrency lock dir (tempest's
# default, /tmp/tempest-lock, is shared by every tempest on the host).
mkdir -p "$priv/etc" "$priv/home" "$priv/lock"

# Written with a python here-doc so the password never reaches argv (ps) and
# needs no quoting: oslo.config would interpolate $ in values, so escape as $$.
umask 077
"$py" - "$priv/etc/tempest.conf" "$auth_url" "$out" "$priv/lock" "$image" <<'EOF'
import os, sys
path, auth_url, out, lock, image = sys.argv[1:]
pw = os.environ["ENVBUILD_SECRET_ADMIN_PASSWORD"].replace("$", "$$")
conf = f"""\
[DEFAULT]
log_dir = {out}
log_file = tempest.log
debug = true
use_stderr = false
# Names of everything tempest creates (dynamic credentials, resources).
resource_name_prefix = tempest

[oslo_concurrency]
lock_path = {lock}

[auth]
# Dynamic credentials: each test class gets its own project and user(s),
# created and deleted with the admin account below.
use_dynamic_credentials = true
admin_username = admin
admin_password = {pw}
admin_project_name = admin
admin_domain_name = Default
admin_user_domain_name = Default
admin_project_domain_name = Default
# keystone-manage bootstrap gives admin the admin role on the system too.
admin_system = all
default_credentials_domain_name = Default
# No neutron: no networks for the dynamic projects.
create_isolated_networks = false
tempest_roles =

[identity]
uri_v3 = {auth_url}
auth_version = v3
region = RegionOne
v3_endpoint_type = public
admin_role = admin
default_domain_id = default
admin_domain_scope = false
catalog_type = identity

[identity-feature-enabled]
# keystone 28 as configured by aio (templates/keystone.conf): v3 only,
# trusts and application credentials (with access rules) on, default project
# tags; no security compliance (lockout, password history) settings, no
# domain-specific drivers, SQL (writable) identity backend.
api_v2 = false
api_v2_admin = false
api_v3 = true
trust = true
access_rules = true
security_compliance = false
domain_specific_drivers = false
immutable_user_source = false
api_extensions = all

[enforce_scope]
# keystone 28 runs oslo.policy's defaults: enforce_scope and
# enforce_new_defaults are both true.
keystone = true

[service_available]
cinder = false
neutron = true
glance = true
swift = true
nova = true
horizon = false

[validation]
run_validation = false

[compute]
image_ref = {image}
image_ref_alt = {image}
flavor_ref = 42
flavor_ref_alt = 84
region = RegionOne
build_timeout = 180
min_compute_nodes = 2

[compute-feature-enabled]
# The fake driver: no consoles, no block devices, no real networking.
console_output = false
vnc_console = false
spice_console = false
serial_console = false
rescue = false
resize = false
cold_migration = false
live_migration = false
block_migration_for_live_migration = false
interface_attach = false
attach_encrypted_volume = false
config_drive = false
metadata_service = false
personality = false
change_password = false
shelve = false
suspend = true
pause = true
snapshot = false

[image]
region = RegionOne
build_timeout = 120

[image-feature-enabled]
import_image = false

[object-storage]
region = RegionOne
operator_role = member
reseller_admin_role = ResellerAdmin

[object-storage-feature-enabled]
discoverability = true
container_sync = false
object_versioning = false

[network]
region = RegionOne

[service-clients]
http_timeout = 60
"""
with open(path, "w") as f:
    f.write(conf)
EOF
umask 022
# The copy kept in OUT, without the password.
sed 's/^admin_password = .*/admin_password = ***/' "$priv/etc/tempest.conf" >"$out/tempest.conf"

# The workspace: OUT/tempest with a .stestr.conf pointing at this venv's tempest
# (written at every run, so a relocated venv is found where it is now).
tempest_dir=$("$py" -c 'import os, tempest; print(os.path.dirname(os.path.dirname(tempest.__file__)))')
printf '[DEFAULT]\ntest_path=%s\ntop_dir=%s\ngroup_regex=([^\\.]*\\.)*\n' \
    "$tempest_dir/tempest/test_discover" "$tempest_dir" >"$out/.stestr.conf"

# PYTHON: the interpreter stestr starts its workers with (tempest would set it
# to sys.executable too). PYTHONDONTWRITEBYTECODE: no __pycache__ in the venv.
export TEMPEST_CONFIG_DIR="$priv/etc" TEMPEST_CONFIG=tempest.conf \
    HOME="$priv/home" PYTHON="$py" PYTHONDONTWRITEBYTECODE=1
unset OS_CLOUD OS_AUTH_URL OS_USERNAME OS_PASSWORD OS_PROJECT_NAME || true

cd "$out"
"$py" -m stestr init >/dev/null
start=$(date +%s)
rc=0
"$py" -m tempest.cmd.main run --regex "$regex" \
    --exclude-list "$here/tempest-exclude.txt" \
    --concurrency "$concurrency" --parallel >"$out/run.log" 2>&1 || rc=$?
end=$(date +%s)
"$py" -m stestr last --subunit >"$out/results.subunit" 2>/dev/null || true
"$py" "$here/subunit2json.py" "$out/results.subunit" "$out/results.json" \
    "$((end - start))" || rc=1

# Anything a failed tearDown left behind (names start with "tempest-", the
# resource_name_prefix): counted in results.json, then deleted.
"$py" "$here/keystone-leftovers.py" --delete tempest- >"$out/leftovers.json" || rc=1
"$py" - "$out/results.json" "$out/leftovers.json" <<'EOF2'
import json, sys
r = json.load(open(sys.argv[1]))
r["leftovers"] = json.load(open(sys.argv[2]))
json.dump(r, open(sys.argv[1], "w"), indent=2)
EOF2
rm -f "$out/leftovers.json"

# The password must not have leaked into anything kept.
validation_check_leak || rc=1

# Verdict from the results, not only from tempest's exit code. Under
# `envbuild test` ($ENVBUILD_RESULT set) the counts also go to the run summary
# as smoke "before", or "after" with VALIDATION_WHEN=after in the phase's env.
"$py" - "$here" "$out/results.json" "$rc" "${ENVBUILD_RESULT:-}" "${VALIDATION_WHEN:-before}" <<'EOF'
import json, sys
here, path, rc, result, when = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
sys.path.insert(0, here)
import result as envbuild_result
r = json.load(open(path))
print(f"tempest: {r['passed']} passed, {r['failed']} failed, {r['skipped']} skipped "
      f"in {r['wall_seconds']} s (tempest exit {rc}); leftovers deleted: "
      f"{sum(r['leftovers']['deleted'].values())}")
for t in r["tests"]:
    if t["status"] == "failed":
        print(f"  FAILED {t['name']}")
envbuild_result.merge(result, "smoke", {k: r[k] for k in ("passed", "failed", "skipped")}, when)
sys.exit(0 if r["failed"] == 0 and r["passed"] > 0 and rc == 0 else 1)
EOF
