"""JSON reports for ``aidoctor merge``, mutated in their structure and in their bytes.

A report mutation names a place in the report by its keys and indices (``["findings", 0,
"rank"]``) and what goes there; values JSON cannot spell (``1e999``, a 5,000-digit integer,
``NaN``) are written raw. Byte operations then apply to the serialized text.
"""

from __future__ import annotations

import copy
import json

from aidfuzz.mutators import MARKER, MARKERS, b2s, s2b

RAW_VALUES = ("1e999", "-1e999", "NaN", "Infinity", "-0", "1" + "0" * 5000, "1.0e-999", "1E400")
VALUES = (
    None,
    True,
    False,
    0,
    -1,
    1.5,
    2**63,
    2**64,
    -(2**63),
    "",
    " ",
    "x" * 100_000,
    MARKER,
    "<script>x-fuzz</script>",
    "critical",
    "high",
    "error",
    "finding",
    "unknown",
    "ok",
    "CRITICAL",
    "\udcff",
    "\x00",
    "a\nb",
    "|",
    "`",
    "*",
    "[x](javascript:y)",
    [],
    {},
    [None],
    {"": None},
    [[[[]]]],
    "aidoctor.report/1",
    "aidoctor.report/2",
)


def places(report, prefix=(), limit=400):
    """Every (path, value) in ``report``, depth first, at most ``limit``."""
    found = [(prefix, report)]
    stack = [(prefix, report)]
    while stack and len(found) < limit:
        where, value = stack.pop()
        if isinstance(value, dict):
            for key in list(value)[:50]:
                found.append((where + (key,), value[key]))
                stack.append((where + (key,), value[key]))
        elif isinstance(value, list):
            for index, item in enumerate(value[:20]):
                found.append((where + (index,), item))
                stack.append((where + (index,), item))
    return found


def _get(report, path):
    for part in path:
        report = report[part]
    return report


def generate(rng, report: dict, heavy: bool = False) -> dict:
    pick = rng.randrange(13)
    spots = places(report)
    where, value = spots[rng.randrange(len(spots))]
    where = list(where)
    if pick <= 3:
        if rng.random() < 0.25:
            return {"op": "raw", "path": where, "raw": rng.choice(RAW_VALUES)}
        return {"op": "set", "path": where, "value": VALUES[rng.randrange(len(VALUES))]}
    if pick == 4:
        return {"op": "delete", "path": where}
    if pick == 5:
        return {
            "op": "deep",
            "path": where,
            "depth": rng.choice((100, 990, 1000, 5000, 100_000) if heavy else (100, 990, 1000)),
            "open": rng.choice("[{"),
        }
    if pick == 6:
        key = rng.choice(("findings", "checks"))
        return {"op": "repeat", "path": [key], "count": rng.choice((2, 1000, 20_000) if heavy else (2, 10, 100))}
    if pick == 7:
        marker = MARKERS[rng.randrange(len(MARKERS))]
        field = rng.choice(
            (
                ["host", "hostname"],
                ["host", "kernel"],
                ["host", "source"],
                ["findings", 0, "title"],
                ["findings", 0, "message"],
                ["findings", 0, "rule"],
                ["checks", 0, "rule"],
                ["checks", 0, "reason"],
                ["checks", 0, "title"],
                ["findings", 0, "remediation", 0, "commands", 0],
                ["host", "distro"],
            )
        )
        return {"op": "set", "path": field, "value": rng.choice((marker, marker * 3, "x" + marker + "\n|a|b|", "`" + marker + "`"))}
    if pick == 8:
        return {
            "op": "set",
            "path": ["findings", rng.randrange(3), "severity"],
            "value": rng.choice(("unknown", "ok", "error", "", "Critical", None, 1, "critical ")),
        }
    if pick == 9:
        return {
            "op": "set",
            "path": ["checks", rng.randrange(3), "status"],
            "value": rng.choice(("error", "unknown", "", None, "finding", 5)),
        }
    if pick == 10:
        return {
            "op": "set",
            "path": rng.choice((["schema"], ["summary", "exit_code"], ["findings", 0, "rank"], ["host"])),
            "value": VALUES[rng.randrange(len(VALUES))],
        }
    if pick == 11:
        return {
            "op": "rename_rule",
            "rule": rng.choice(("", "x", "a.b" * 1000, MARKER, "hugepages.shortfall", "unknown.rule", "\n", "a|b", "<td>")),
        }
    return {"op": "set", "path": where, "value": rng.choice((value, [value], {"x": value}, str(value)[:100]))}


def apply(report: dict, m: dict) -> dict:
    """``report`` changed by ``m``; places that are gone (an earlier mutation) change nothing."""
    op = m["op"]
    if op == "rename_rule":
        findings = report.get("findings") if isinstance(report, dict) else None
        for item in findings if isinstance(findings, list) else []:
            if isinstance(item, dict):
                item["rule"] = m["rule"]
        return report
    path = m.get("path", [])
    if not path:
        if op == "set":
            return m["value"]
        if op == "raw":
            return {"\x00raw": m["raw"]}
        if op == "deep":
            return {"\x00deep": [m["depth"], m["open"]]}
        return report
    try:
        holder = _get(report, path[:-1])
        key = path[-1]
        if isinstance(holder, list) and not isinstance(key, int):
            return report
        if isinstance(holder, dict) and isinstance(key, int):
            return report
        if isinstance(holder, list) and not (-len(holder) <= key < len(holder)):
            return report
        if op == "set":
            holder[key] = copy.deepcopy(m["value"])
        elif op == "raw":
            holder[key] = {"\x00raw": m["raw"]}
        elif op == "delete":
            del holder[key]
        elif op == "deep":
            holder[key] = {"\x00deep": [m["depth"], m["open"]]}
        elif op == "repeat":
            value = holder[key]
            if isinstance(value, list) and value:
                holder[key] = value * m["count"]
    except (KeyError, IndexError, TypeError):
        pass
    return report


def serialize(report) -> bytes:
    """JSON text, with the raw placeholders written as themselves."""
    raws = []

    def default(value):
        raise TypeError(repr(value))

    def walk(value):
        if isinstance(value, dict):
            if len(value) == 1 and "\x00raw" in value:
                raws.append(value["\x00raw"])
                return "\x00RAW%d\x00" % (len(raws) - 1)
            if len(value) == 1 and "\x00deep" in value:
                depth, opener = value["\x00deep"]
                raws.append(("[" * depth + "1" + "]" * depth) if opener == "[" else ('{"a":' * depth + "1" + "}" * depth))
                return "\x00RAW%d\x00" % (len(raws) - 1)
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    text = json.dumps(walk(report), default=default, allow_nan=True)
    for index, raw in enumerate(raws):
        text = text.replace('"\\u0000RAW%d\\u0000"' % index, raw)
    return text.encode("utf-8", "surrogatepass")


def byte_op(rng, size: int) -> dict:
    kind = rng.choice(("flip", "truncate", "bom", "invalid", "nul", "pad", "pad"))
    if kind == "flip":
        return {"op": "flip", "pos": rng.randrange(max(size, 1)), "bit": rng.randrange(8)}
    if kind == "truncate":
        return {"op": "truncate", "len": rng.randrange(size + 1)}
    if kind == "bom":
        return {"op": "insert", "pos": 0, "data": b2s("\ufeff".encode())}
    if kind == "invalid":
        return {"op": "insert", "pos": rng.randrange(size + 1), "data": rng.choice(("\xff", "\xc3", "\xed\xa0\x80"))}
    if kind == "nul":
        return {"op": "insert", "pos": rng.randrange(size + 1), "data": "\x00"}
    return {"op": "pad", "unit": rng.choice((" ", "\n", "\t")), "count": rng.choice((1, 80_000, 1 << 20))}


def apply_bytes(data: bytes, op: dict) -> bytes:
    kind = op["op"]
    pos = min(op.get("pos", 0), len(data))
    if kind == "flip":
        return data[:pos] + bytes([data[pos] ^ (1 << op["bit"])]) + data[pos + 1 :] if pos < len(data) else data
    if kind == "truncate":
        return data[: op["len"]]
    if kind == "insert":
        return data[:pos] + s2b(op["data"]) + data[pos:]
    if kind == "pad":
        return data + op["unit"].encode() * op["count"]
    if kind == "setsize":
        # Whitespace after the report up to exactly ``size`` bytes (the merge's read cap).
        return data + b" " * max(0, op["size"] - len(data))
    raise ValueError("unknown byte op %r" % kind)
