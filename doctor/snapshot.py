"""Snapshots: what the checks read on a host, written as a tree that replays identically.

The tree has the target's files at their paths, links as links, and ``/.aidoctor/manifest.json``
for what files cannot carry: who took it, and the outcomes (permission denied, I/O errors)
of reads that failed. ``aidoctor --root TREE`` analyses it; fixtures use the same layout.
"""

from __future__ import annotations

import json
import os
import stat
import time

from ai_doctor import __version__
from ai_doctor.host import MANIFEST, MANIFEST_DIR, NOT_UNDERSTOOD, Host, join_link

FORMAT = 1


def capture(root: str = "/", argv=()):
    """Read everything any check could read; returns the Host holding the log."""
    from ai_doctor import engine
    from ai_doctor.facts import PROVIDERS, Facts
    from ai_doctor.model import Request

    host = Host(root, trace_links=True)
    # A size larger than any host makes every memory check read all it can.
    request = Request(model_size=1 << 60, size_text="1E", size_source="snapshot", described="snapshot", argv=tuple(argv))
    facts = Facts(host, request)
    for name in sorted(PROVIDERS):
        facts.get(name)
    engine.run(facts, engine.select())
    return host


def manifest_for(host, argv=()) -> dict:
    from ai_doctor.facts import Facts

    facts = Facts(host)
    hostname, release = facts.get("hostname"), facts.get("release")
    return {
        "format": FORMAT,
        "aidoctor": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hostname": hostname if isinstance(hostname, str) else None,
        "kernel": release if isinstance(release, str) else None,
        "uid": host.euid,
        "argv": list(argv),
        "outcomes": {},
    }


def write_tree(host, destination: str, manifest: dict) -> int:
    """Write what ``host`` logged under ``destination`` (which must not exist, in a directory
    that does); returns the number of entries written."""
    os.mkdir(destination)
    links = {}
    for kind, path, got in host.log:
        if kind == "link" and got.data:
            links[path] = got.data
    outcomes = {}
    listed = []
    stats = []
    written = 0
    for kind, path, got in host.log:
        if kind.startswith("derived:"):
            # What was found in a file is kept, not the file; a file that could not be
            # understood replays as the stand-in its listing leaves.
            if got.ok or (got.status == "error" and got.detail != "not a regular file"):
                # A file that was there but not understood replays as that, not as absent.
                target = _place(destination, "%s/derived/%s%s" % (MANIFEST_DIR, kind.split(":", 1)[1], path))
                _ensure_parent(target)
                with open(target, "w", encoding="utf-8") as handle:
                    handle.write(got.data if got.ok else NOT_UNDERSTOOD + got.detail)
                written += 1
            elif got.denied:
                outcomes[path] = got.status
            continue
        if got.failed:
            outcomes[path] = got.status if got.denied else (got.detail or got.status)
            continue
        if not got.ok or path == "/":
            continue
        # A link itself sits at its own path; what was read through one lives at its target.
        target = _place(destination, _through(path, links, follow_last=kind != "link"))
        if kind == "file":
            _ensure_parent(target)
            if not os.path.lexists(target):
                with open(target, "wb") as handle:
                    data = got.data
                    handle.write(data.encode("utf-8") if isinstance(data, str) else data)
                written += 1
        elif kind == "link" and got.data:
            _ensure_parent(target)
            if not os.path.lexists(target):
                os.symlink(got.data, target)
                written += 1
        elif kind == "dir":
            os.makedirs(target, exist_ok=True)
            listed.extend((path.rstrip("/") + "/" + name, target + "/" + name) for name in got.data)
            written += 1
        elif kind == "stat":
            stats.append((target, got.data))
    # After the reads: a stat must not leave an empty stand-in where a file's content belongs,
    # and the mode it saw (rc.local's executable bit) goes onto the file written.
    for target, info in stats:
        if not os.path.lexists(target):
            _ensure_parent(target)
            if info.is_dir:
                os.makedirs(target)
            else:
                with open(target, "wb"):
                    pass
            written += 1
        if not info.is_dir and not os.path.islink(target):
            os.chmod(target, stat.S_IMODE(info.mode))
    # Names that were listed but never read get an empty stand-in of their kind, last, so a
    # stand-in never takes the place of a file that was read.
    for path, entry in listed:
        if not os.path.lexists(entry):
            _placeholder(host, path, entry)
    manifest = dict(manifest, outcomes=dict(sorted(outcomes.items())))
    os.makedirs(destination + MANIFEST_DIR, exist_ok=True)
    with open(destination + MANIFEST, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return written


def _through(path: str, links: dict, follow_last: bool = True, depth: int = 0) -> str:
    """``path`` with the recorded links along it resolved (the tree holds their targets)."""
    if depth > 40:
        return path
    parts = [p for p in path.split("/") if p]
    resolved = ""
    for index, part in enumerate(parts):
        candidate = resolved + "/" + part
        if candidate in links and (follow_last or index < len(parts) - 1):
            candidate = _through(join_link(candidate, links[candidate]), links, True, depth + 1)
        resolved = candidate
    return resolved or "/"


def _place(destination: str, path: str) -> str:
    return destination.rstrip("/") + path


def _ensure_parent(target: str) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)


def _placeholder(host, path: str, entry: str) -> None:
    """A listed name that nothing read: recreate its kind (empty), so listings replay the same."""
    kind, target = host.entry_kind(path)
    if kind == "dir":
        os.makedirs(entry, exist_ok=True)
    elif kind == "link":
        os.symlink(target, entry)
    elif kind == "file":
        with open(entry, "wb"):
            pass
