#!/usr/bin/env python3
"""Median times of the criterion benchmarks, with the ratio to the floor of each group (the bare
HMAC-SHA256 of the same bytes, where the group has one).

    cargo bench && python3 bench/medians.py                  # the last run
    python3 bench/medians.py --save target/run1.json         # ... and keep its medians
    python3 bench/medians.py --combine target/run*.json      # median over several runs

On a shared machine, run the benches a few times and combine: noise that hits one run's
benchmark does not move the median of the runs.
"""
import json
import pathlib
import statistics
import sys


def read_criterion(root):
    rows = {}
    for estimates in sorted(pathlib.Path(root).glob("**/new/estimates.json")):
        bench = json.loads((estimates.parent / "benchmark.json").read_text())
        key = "|".join([bench["group_id"], bench.get("function_id") or "", bench.get("value_str") or ""])
        rows[key] = json.loads(estimates.read_text())["median"]["point_estimate"]
    return rows


def fmt(ns):
    return f"{ns / 1e6:.3f} ms" if ns >= 1e6 else f"{ns / 1e3:.3f} us" if ns >= 1e3 else f"{ns:.1f} ns"


def show(rows, runs):
    floors = {}
    for key, ns in rows.items():
        group, function, value = key.split("|")
        if function == "hmac_sha256_bare":
            floors[(group, value)] = ns
    print(f"medians of {runs} run(s)")
    print(f"{'group':28} {'benchmark':34} {'input':8} {'median':>12} {'x HMAC':>8}")
    for key, ns in rows.items():
        group, function, value = key.split("|")
        floor = floors.get((group, value))
        ratio = f"{ns / floor:.2f}" if floor else ""
        print(f"{group:28} {function:34} {value:8} {fmt(ns):>12} {ratio:>8}")


args = sys.argv[1:]
if args[:1] == ["--combine"]:
    runs = [json.loads(pathlib.Path(f).read_text()) for f in args[1:]]
    keys = [k for k in runs[0] if all(k in run for run in runs)]
    show({k: statistics.median(run[k] for run in runs) for k in keys}, len(runs))
else:
    save = None
    if "--save" in args:
        i = args.index("--save")
        save = args[i + 1]
        del args[i : i + 2]
    rows = read_criterion(args[0] if args else "target/criterion")
    if save:
        pathlib.Path(save).write_text(json.dumps(rows, indent=1))
    show(rows, 1)
