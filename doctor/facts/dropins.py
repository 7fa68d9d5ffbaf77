"""Drop-in folders (sysctl.d, modprobe.d, tmpfiles.d): the files read, in the order read.

The same rule for each (sysctl.d(5), modprobe.d(5), tmpfiles.d(5)): every ``*.conf`` in the
folders, taken together and read in lexicographic order of file name, a name in an earlier
folder hiding the same name in a later one.
"""

from __future__ import annotations


def dropin_files(host, folders, suffix: str = ".conf"):
    """[(name, path)] of the files read, in reading order."""
    chosen = {}
    for folder in folders:
        listing = host.listdir(folder)
        for name in listing.data if listing.ok else ():
            if name.endswith(suffix) and name not in chosen:
                chosen[name] = "%s/%s" % (folder, name)
    return sorted(chosen.items())
