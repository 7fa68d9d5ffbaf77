"""aidoctor's fuzzer (issue 13): mutated host trees, snapshot archives and JSON reports run
in-process through the checkup, snapshot and replay, and merge, against a set of oracles.

Modules: ``trees`` (host trees in memory), ``mutators`` (tree mutations), ``archives`` (tar
archives member by member), ``reports`` (JSON report mutations), ``cases`` (recipes from
seeds), ``execute`` (one case in a forked child, and the oracles), ``campaign`` (workers,
deduplication, minimizing, reproducers). Entry points: tests/fuzz/test_fuzz.py (the short
run and the regression corpus) and benchmarks/fuzz.py (the long run).
"""
