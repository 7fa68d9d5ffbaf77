"""Cases: what one fuzz execution builds and runs, drawn from a seed and kept as a recipe.

A recipe (a JSON object) names its target, the tree it starts from (a fixture, or the small
built-in host; optionally a subset of its files), the mutations applied to it, for archives
the archive description, for merges the reports, and the command lines to run. Rebuilding
a recipe needs nothing but the recipe and this checkout's fixtures.

Targets:

- ``checkup``: ``aidoctor --root TREE --model-size 8G --format json`` and a few variants
  (html, markdown, npd, --next-boot, --image, report files, ``fix`` plans), sometimes merged.
- ``replay``: the direct run, ``snapshot --root TREE -o OUT`` then ``--root OUT``, and
  ``snapshot -o OUT.tar.gz`` then ``--snapshot OUT.tar.gz``: each must match the direct run.
- ``archive``: ``--snapshot FILE`` on an archive built member by member and mutated.
- ``merge``: ``aidoctor merge`` on fixture reports, some of them mutated.
"""

from __future__ import annotations

import random

from aidfuzz import archives, mutators, reports, trees

FORMAT = 1
MODEL = ["--model-size", "8G"]
AREAS = ("hugepages", "thp", "overcommit", "memory", "cpu", "storage", "kernel", "gpu", "access", "persist")

# The cheap fixtures (few files) are drawn more often; every fixture is drawn.
_WEIGHTS = {"image-without-proc": 3, "image-ubuntu-clean": 3, "image-rhel-traps": 3, "vps-no-hugetlb": 2, "image-gpu-no-driver": 2}


def case_seed(campaign_seed: int, index: int) -> int:
    """The seed of case ``index`` of a campaign: independent of how cases are shared out."""
    return random.Random(campaign_seed * 1_000_003 + index).getrandbits(48)


def _base(rng, quick: bool):
    pick = rng.random()
    if pick < (0.45 if quick else 0.3):
        return {"mini": True}, None
    names = trees.fixture_names()
    weighted = [name for name in names for _ in range(_WEIGHTS.get(name, 1))]
    name = weighted[rng.randrange(len(weighted))]
    subset = None
    if rng.random() < 0.5:
        subset = {"ratio": rng.choice((0.3, 0.6, 0.85)), "seed": rng.getrandbits(32)}
    return {"fixture": name}, subset


def base_tree(recipe: dict) -> dict:
    base = recipe["base"]
    tree = trees.mini_host() if base.get("mini") else trees.load_fixture(base["fixture"])
    subset = recipe.get("subset")
    if subset:
        if "keep" in subset:
            tree = trees.keep_only(tree, subset["keep"])
        else:
            tree = trees.subset(tree, subset["ratio"], subset["seed"])
    return tree


def build_tree(recipe: dict) -> dict:
    tree = base_tree(recipe)
    for mutation in recipe.get("mutations", ()):
        mutators.apply(tree, mutation)
    return tree


def _mutations(rng, tree, count: int, heavy: bool):
    done = []
    if heavy:
        mutation = mutators.generate_heavy(rng, tree)
        mutators.apply(tree, mutation)
        done.append(mutation)
    for _ in range(count):
        mutation = mutators.generate(rng, tree, heavy)
        if mutation is None:
            continue
        mutators.apply(tree, mutation)
        done.append(mutation)
    return done


def _check_runs(rng, heavy: bool, recipe: dict):
    tree = ["--root", "{TREE}"]
    runs = [{"argv": tree + MODEL + ["--format", "json"], "format": "json", "role": "direct"}]
    extras = [
        {"argv": tree + MODEL + ["--format", "html"], "format": "html"},
        {"argv": tree + MODEL + ["--format", "markdown"], "format": "markdown"},
        {"argv": tree + MODEL + ["--format", "npd"], "format": "npd"},
        {"argv": tree + MODEL + ["--format", "text", "-v"], "format": "text"},
        {"argv": tree + MODEL + ["--next-boot", "--format", "json"], "format": "json"},
        {"argv": tree + MODEL + ["--image", "--format", "json"], "format": "json"},
        {
            "argv": tree + ["--params", "70B", "--hugepages", "16", "--format", "json", "--only", AREAS[rng.randrange(len(AREAS))]],
            "format": "json",
        },
        {
            "argv": tree
            + MODEL
            + ["--format", "json", "-o", "{OUT}/r.json", "--html", "{OUT}/r.html", "--junit", "{OUT}/r.xml"]
            + ["--sarif", "{OUT}/r.sarif", "--prom", "{OUT}/r.prom"],
            "format": "none",
            "files": {"out/r.json": "json", "out/r.html": "html", "out/r.xml": "xml", "out/r.sarif": "json", "out/r.prom": "text"},
        },
        {"argv": ["fix"] + tree + MODEL + ["--format", "json"], "format": "json-plan"},
        {"argv": ["fix"] + tree + MODEL, "format": "text"},
    ]
    rng.shuffle(extras)
    runs.extend(extras[: rng.choice((1, 2, 2, 3))])
    # Single-area runs: few facts and parsers each, so cheap; every area's parsers alone.
    for area in rng.sample(AREAS, rng.choice((4, 5, 6, 7, 8))):
        runs.append({"argv": tree + MODEL + ["--only", area, "--format", "json"], "format": "json"})
    for run in runs:
        if "files" in run:
            run["outputs"] = sorted(run["files"])
            if rng.random() < 0.5:
                # The report written here is merged with a fixture's, as a fleet would.
                names = trees.fixture_names()
                recipe["reports"] = [{"fixture": names[rng.randrange(len(names))], "args": MODEL, "mutations": [], "bytes": []}]
                runs.append({"argv": ["merge", "{OUT}/r.json", "{IN}/r0.json", "--format", "html"], "format": "html"})
            break
    return runs


def _replay_runs(rng):
    args = rng.choice((MODEL, MODEL, ["--model-size", "140G", "--hugepages", "16"], ["--params", "8B", "-v"], MODEL + ["--next-boot"], []))
    runs = [
        {"argv": ["--root", "{TREE}"] + args + ["--format", "json"], "format": "json", "role": "direct"},
        {"argv": ["snapshot", "--root", "{TREE}", "-o", "{OUT}/snap/"], "format": "snapshot", "outputs": ["out/snap"], "role": "snapshot"},
        {"argv": ["--root", "{OUT}/snap"] + args + ["--format", "json"], "format": "json", "role": "replay", "via": "dir"},
    ]
    if rng.random() < 0.5:
        runs.append(
            {
                "argv": ["snapshot", "--root", "{TREE}", "-o", "{OUT}/snap.tar.gz"],
                "format": "snapshot",
                "outputs": ["out/snap.tar.gz"],
                "role": "snapshot",
            }
        )
        runs.append(
            {"argv": ["--snapshot", "{OUT}/snap.tar.gz"] + args + ["--format", "json"], "format": "json", "role": "replay", "via": "tar"}
        )
    return runs


def generate(seed: int, quick: bool = False, heavy_share: float = 0.005) -> dict:
    """The recipe of case ``seed``. ``quick``: small trees and no multi-megabyte inputs."""
    rng = random.Random(seed)
    heavy = (not quick) and rng.random() < heavy_share
    target = rng.choices(("checkup", "replay", "archive", "merge"), weights=(55, 20, 15, 10))[0]
    base, subset = _base(rng, quick)
    recipe = {"format": FORMAT, "seed": seed, "target": target, "base": base, "subset": subset, "heavy": heavy}
    tree = base_tree(recipe)
    count = rng.choice((0, 1, 1, 2, 2, 3, 4, 6))
    if target == "archive" and rng.random() < 0.5:
        count = 0
    recipe["mutations"] = _mutations(rng, tree, count, heavy) if target != "merge" else []
    if target == "checkup":
        recipe["runs"] = _check_runs(rng, heavy, recipe)
    elif target == "replay":
        recipe["runs"] = _replay_runs(rng)
    elif target == "archive":
        recipe["archive"] = archives.normalize(archives.generate(rng, tree, heavy))
        runs = [{"argv": ["--snapshot", "{IN}/host.tar.gz"] + MODEL + ["--format", "json"], "format": "json"}]
        if rng.random() < 0.3:
            runs.append({"argv": ["--snapshot", "{IN}/host.tar.gz"] + MODEL + ["--format", "html"], "format": "html"})
        if rng.random() < 0.2:
            runs.append({"argv": ["fix", "--snapshot", "{IN}/host.tar.gz"] + MODEL + ["--format", "json"], "format": "json-plan"})
        recipe["runs"] = runs
        recipe["heavy"] = heavy or archives.heavy(recipe["archive"])
    else:
        recipe["reports"] = _merge_reports(rng, heavy)
        names = ["{IN}/r%d.json" % i for i in range(len(recipe["reports"]))]
        fmt = rng.choice(("json", "html", "markdown", "text"))
        runs = [{"argv": ["merge"] + names + ["--format", fmt], "format": fmt}]
        if rng.random() < 0.3:
            runs.append(
                {
                    "argv": ["merge"] + names + ["--format", "json", "-o", "{OUT}/fleet.json", "--html", "{OUT}/fleet.html"],
                    "format": "none",
                    "outputs": ["out/fleet.json", "out/fleet.html"],
                    "files": {"out/fleet.json": "json", "out/fleet.html": "html"},
                }
            )
        recipe["runs"] = runs
    recipe["timeout"] = 30 if recipe["heavy"] else 10
    return recipe


REPORT_ARGS = (MODEL, ["--model-size", "140G"], ["--params", "70B", "--dtype", "int4"], [])


def _merge_reports(rng, heavy: bool):
    out = []
    names = trees.fixture_names()
    for _ in range(rng.choice((1, 2, 2, 3, 5))):
        item = {
            "fixture": names[rng.randrange(len(names))],
            "args": REPORT_ARGS[rng.randrange(len(REPORT_ARGS))],
            "mutations": [],
            "bytes": [],
        }
        if rng.random() < 0.75:
            report = {"findings": [{"rank": 1}], "checks": [{}], "host": {}, "summary": {}, "schema": ""}
            for _ in range(rng.choice((1, 1, 2, 3))):
                item["mutations"].append(reports.generate(rng, report, heavy))
        if rng.random() < 0.3:
            op = reports.byte_op(rng, 4000)
            if op["op"] == "pad" and not heavy:
                op["count"] = min(op["count"], 80_000)
            item["bytes"].append(op)
        if heavy and rng.random() < 0.5:
            from ai_doctor.fleet import MAX_REPORT

            item["bytes"].append({"op": "setsize", "size": MAX_REPORT + rng.choice((-1, 0, 1))})
        out.append(item)
    if rng.random() < 0.1:
        out.append(dict(out[0]))  # the same report twice under two names
    return out


def describe(recipe: dict) -> str:
    base = recipe["base"].get("fixture", "mini")
    parts = ["%s on %s" % (recipe["target"], base)]
    if recipe.get("subset"):
        parts.append("(subset)")
    muts = [mutators.describe(m) for m in recipe.get("mutations", ())]
    if muts:
        parts.append("mutations: " + "; ".join(muts))
    if recipe.get("archive"):
        spec = recipe["archive"]
        ops = [
            op["op"] + ("(%s)" % ",".join(sorted(op.get("records", op.get("fields", {})))) if "records" in op or "fields" in op else "")
            for op in spec.get("members", ())
        ]
        parts.append(
            "archive %s/%s members: %s raw: %s packed: %s"
            % (
                spec.get("format"),
                spec.get("compress"),
                ops,
                [o["op"] for o in spec.get("raw", ())],
                [o["op"] for o in spec.get("packed", ())],
            )
        )
    if recipe.get("reports"):
        parts.append("reports: %s" % ["%s%s" % (r["fixture"], "*" if r["mutations"] or r["bytes"] else "") for r in recipe["reports"]])
    return " ".join(parts)
