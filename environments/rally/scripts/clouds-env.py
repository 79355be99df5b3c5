"""clouds-env.py CLOUDS_YAML CLOUD: the cloud's credentials as OS_* lines for `set -a; .`.

Reads the clouds.yaml format of openstacksdk (what `envbuild creds ENV` writes); values are
single-quoted for sh. Exit 2 with one line when the file or the cloud is not usable.
"""
import sys

import yaml


def quote(value):
    return "'" + str(value).replace("'", "'\\''") + "'"


def main(path, name):
    try:
        with open(path) as f:
            clouds = (yaml.safe_load(f) or {}).get("clouds") or {}
    except (OSError, yaml.YAMLError) as e:
        sys.exit(f"clouds-env.py: {path}: {e}")
    if name not in clouds:
        sys.exit(f"clouds-env.py: {path} has no cloud {name!r} (it has: {', '.join(clouds) or 'none'})")
    cloud = clouds[name]
    auth = cloud.get("auth") or {}
    missing = [k for k in ("auth_url", "username", "password") if not auth.get(k)]
    if missing:
        sys.exit(f"clouds-env.py: cloud {name!r} has no {', '.join(missing)}")
    values = {
        "OS_AUTH_URL": auth["auth_url"],
        "OS_USERNAME": auth["username"],
        "OS_PASSWORD": auth["password"],
        "OS_PROJECT_NAME": auth.get("project_name", "admin"),
        "OS_USER_DOMAIN_NAME": auth.get("user_domain_name", "Default"),
        "OS_PROJECT_DOMAIN_NAME": auth.get("project_domain_name", "Default"),
        "OS_REGION_NAME": cloud.get("region_name", "RegionOne"),
        "OS_INTERFACE": cloud.get("interface", "public"),
        "OS_IDENTITY_API_VERSION": cloud.get("identity_api_version", 3),
    }
    if cloud.get("cacert"):
        values["OS_CACERT"] = cloud["cacert"]
    for key, value in values.items():
        print(f"{key}={quote(value)}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: clouds-env.py CLOUDS_YAML CLOUD")
    main(sys.argv[1], sys.argv[2])
