"""nova-flavors.py NOVA_CONF — the flavors of the aio cloud, created with nova's own objects
(the database stage; venv python). Idempotent. The fake driver gives every server what its
flavor asks for, so small flavors are only a convention here.
"""
import sys

from nova import config, context, exception, objects

FLAVORS = [("m1.nano", "42", 128, 1, 1), ("m1.micro", "84", 192, 1, 1), ("m1.small", "2", 2048, 1, 20)]


def main():
    config.parse_args(["nova-flavors", "--config-file", sys.argv[1]])
    objects.register_all()
    ctx = context.get_admin_context()
    for name, flavorid, ram, vcpus, disk in FLAVORS:
        try:
            objects.Flavor.get_by_name(ctx, name)
            continue
        except exception.FlavorNotFoundByName:
            pass
        objects.Flavor(ctx, name=name, flavorid=flavorid, memory_mb=ram, vcpus=vcpus,
                       root_gb=disk, ephemeral_gb=0, swap=0, rxtx_factor=1.0,
                       is_public=True).create()
    print("nova-flavors: " + ", ".join(f[0] for f in FLAVORS))


if __name__ == "__main__":
    main()
