"""Writing a file whole or not at all inside a folder held open: a temporary file beside it,
created exclusively and never through a link, renamed over it. A reader sees the old file or
the new one, never a torn one, and nothing is written outside the folder."""

from __future__ import annotations

import os


def replace(folder: int, name: str, data: bytes, temporary: str, settle=None) -> None:
    """``data`` as ``name`` in the folder open at ``folder``, through ``temporary`` (mode 0600
    until ``settle(fd)``, if given, sets its mode and owner); raises OSError, leaving neither."""
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=folder)
    try:
        with os.fdopen(fd, "wb") as stream:
            if settle is not None:
                settle(stream.fileno())
            stream.write(data)
        os.rename(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        try:
            os.unlink(temporary, dir_fd=folder)
        except OSError:
            pass
        raise
