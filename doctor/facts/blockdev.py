"""Block devices and their request queues (Documentation/ABI/stable/sysfs-block).

``queue/scheduler`` lists the schedulers with the active one in brackets; a bare ``none``
means the device takes no scheduler (a bio-based queue). NVMe namespaces are known by name
(``nvme0n1``; the hidden multipath paths are ``nvme0c0n1``) or by a sysfs path through an
``nvme`` class device. ``mq/`` holds one directory per hardware queue (block/blk-mq-sysfs.c).
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
    """A whole disk: its name, sysfs device path, active and available schedulers, whether
    the kernel hides it, and how many hardware queues it has (None: not read)."""

    __slots__ = ("name", "sysfs_path", "scheduler", "schedulers", "hidden", "hw_queues")
    _defaults = {"hw_queues": None}

    @property
    def is_nvme(self) -> bool:
        return _nvme_name(self.name) is not None or "/nvme/" in (self.sysfs_path or "")

    @property
    def is_virtual(self) -> bool:
        return self.name.startswith(_VIRTUAL)

    @property
    def head(self):
        """For a native NVMe multipath path (``nvme0c1n1``) the name of its multipath head
        (``nvme0n1``), else None. drivers/nvme/host/core.c names a path
        nvme<subsystem>c<controller>n<namespace> and multipath.c the head nvme<subsystem>n<namespace>."""
        parts = _nvme_name(self.name)
        return "nvme%sn%s" % (parts[0], parts[2]) if parts and parts[1] is not None else None

    @property
    def scheduler_path(self) -> str:
        return "%s/%s/queue/scheduler" % (BLOCK_DIR, self.name)


def _nvme_name(name: str):
    """(subsystem, controller or None, namespace) of ``nvme0n1`` or the multipath path
    ``nvme0c1n1``; None for anything else, partitions (``nvme0n1p1``) included."""
    if not name.startswith("nvme"):
        return None
    first, sep, namespace = name[4:].partition("n")
    subsystem, c, controller = first.partition("c")
    if not (sep and _digits(subsystem) and _digits(namespace)) or (c and not _digits(controller)):
        return None
    return subsystem, controller if c else None, namespace


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
        device = BlockDevice(name, sysfs_path, None, (), False)
        if not device.is_virtual:
            got = host.read_text(path + "/queue/scheduler", cap=4096)
            active, choices = parse_choice(got.data) if got.ok else (None, ())
            hidden = host.read_text(path + "/hidden", cap=64) if device.is_nvme else None
            # One listing per NVMe device: the kernel's default scheduler depends on the count.
            queues = host.listdir(path + "/mq") if device.is_nvme else None
            device = device._replace(
                scheduler=active,
                schedulers=choices,
                hidden=bool(hidden and hidden.ok and hidden.data.strip() == "1"),
                hw_queues=sum(1 for q in queues.data if _digits(q)) if queues and queues.ok else None,
            )
        devices.append(device)
    return tuple(devices)
