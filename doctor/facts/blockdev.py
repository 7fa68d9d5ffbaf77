"""Block devices and their request queues (Documentation/ABI/stable/sysfs-block).

``queue/scheduler`` lists the schedulers with the active one in brackets; a bare ``none``
means the device takes no scheduler. NVMe namespaces are known by name (``nvme0n1``; the
hidden multipath paths are ``nvme0c0n1``) or by a sysfs path through an ``nvme`` class device.
"""

from __future__ import annotations

from ai_doctor.facts import fact, unreadable
from ai_doctor.facts.memory import parse_choice
from ai_doctor.host import join_link
from ai_doctor.record import Record

BLOCK_DIR = "/sys/block"
# Pseudo devices whose queues do not matter for loading models from disk.
_VIRTUAL = ("loop", "ram", "zram", "dm-", "md", "nbd", "sr")


class BlockDevice(Record):
    """A whole disk: its name, sysfs device path, active and available schedulers."""

    __slots__ = ("name", "sysfs_path", "scheduler", "schedulers", "rotational", "hidden")

    @property
    def is_nvme(self) -> bool:
        return _nvme_name(self.name) or "/nvme/" in (self.sysfs_path or "")

    @property
    def is_virtual(self) -> bool:
        return self.name.startswith(_VIRTUAL)

    @property
    def scheduler_path(self) -> str:
        return "%s/%s/queue/scheduler" % (BLOCK_DIR, self.name)


def _nvme_name(name: str) -> bool:
    """``nvme0n1`` or the hidden multipath path ``nvme0c1n1``; not partitions (``nvme0n1p1``)."""
    if not name.startswith("nvme"):
        return False
    controller, sep, namespace = name[4:].partition("n")
    if "c" in controller:
        ctrl, _, path = controller.partition("c")
        controller = ctrl if _digits(path) else ""
    return bool(sep) and _digits(controller) and _digits(namespace)


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


@fact("block_devices")
def block_devices(host, facts):
    listing = host.listdir(BLOCK_DIR)
    if not listing.ok:
        return unreadable(host, listing, "cannot list")
    devices = []
    for name in listing.data:
        path = "%s/%s" % (BLOCK_DIR, name)
        link = host.readlink(path)
        sysfs_path = join_link(path, link.data) if link.data else None
        device = BlockDevice(name, sysfs_path, None, (), None, False)
        if not device.is_virtual:
            got = host.read_text(path + "/queue/scheduler", cap=4096)
            active, choices = parse_choice(got.data) if got.ok else (None, ())
            rotational = host.read_text(path + "/queue/rotational", cap=64)
            hidden = host.read_text(path + "/hidden", cap=64) if device.is_nvme else None
            device = device._replace(
                scheduler=active,
                schedulers=choices,
                rotational=rotational.data.strip() == "1" if rotational.ok else None,
                hidden=bool(hidden and hidden.ok and hidden.data.strip() == "1"),
            )
        devices.append(device)
    return tuple(devices)
