"""rings.py build | write OUT — swift's three rings (account, container, object) for the aio
environment: 3 replicas on 3 storage nodes of one device each (node N = device dN).
  build       (stage "swift", cwd = root) builder files in swift/, devices on port 1,
              and the device folders var/swift/nodeN/dN
  write OUT   (prestart) OUT/KIND.ring.gz from those builders with this up's ports
              (ENVBUILD_PORT_SWIFT_KINDN)
Run with the venv's python. Uses swift's RingBuilder in-process (what swift-ring-builder
does, without one interpreter start per command).
"""
import os
import sys

from swift.common.ring import RingBuilder

KINDS = ("account", "container", "object")
NODES = (1, 2, 3)


def build():
    os.makedirs("swift", exist_ok=True)
    for kind in KINDS:
        # 2^8 partitions (plenty for a test cloud), 3 replicas, min_part_hours 1.
        builder = RingBuilder(8, 3, 1)
        for node in NODES:
            builder.add_dev({"id": node - 1, "region": 1, "zone": node, "ip": "127.0.0.1",
                             "port": 1, "device": f"d{node}", "weight": 100, "meta": ""})
        builder.rebalance(seed=1)      # fixed seed: a rebuild places partitions the same way
        builder.save(f"swift/{kind}.builder")
    for node in NODES:
        os.makedirs(f"var/swift/node{node}/d{node}", exist_ok=True)
    print("rings.py: account, container, object builders (256 partitions, 3 replicas)")


def write(out):
    os.makedirs(out, exist_ok=True)
    for kind in KINDS:
        builder = RingBuilder.load(f"swift/{kind}.builder")
        for dev in builder.devs:
            node = int(dev["device"][1:])
            dev["port"] = int(os.environ[f"ENVBUILD_PORT_SWIFT_{kind.upper()}{node}"])
        builder.get_ring().save(os.path.join(out, f"{kind}.ring.gz"))


def main():
    if sys.argv[1:] == ["build"]:
        build()
    elif len(sys.argv) == 3 and sys.argv[1] == "write":
        write(sys.argv[2])
    else:
        sys.exit("usage: rings.py build | write OUT")


if __name__ == "__main__":
    main()
