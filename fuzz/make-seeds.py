#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets from the shared signature vectors.

Usage: fuzz/make-seeds.py [vectors.json]   (default: ../shared/vectors/signatures.json, else
tests/vectors/signatures.json). Seeds go to fuzz/corpus/<target>/ (not committed).
"""
import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
candidates = sys.argv[1:] or [
    os.path.join(root, "..", "shared", "vectors", "signatures.json"),
    os.path.join(root, "tests", "vectors", "signatures.json"),
]
path = next(p for p in candidates if os.path.exists(p))
cases = json.load(open(path, encoding="utf-8"))["cases"]


def write(target, name, data):
    folder = os.path.join(here, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


for case in cases:
    sig = case["signature_header"]
    ts = case.get("timestamp_header")
    body = case["body"].encode()
    name = case["name"]
    write("parse_header", name, ((ts or "").encode() + b"\n" if ts is not None else b"") + (sig or "").encode())
    fields = [
        str(case["now"]).encode(),
        str(case["tolerance"]).encode(),
        "\x1f".join(case["secrets"]).encode(),
        b"" if sig is None else b"H" + sig.encode(),
        b"" if ts is None else b"T" + ts.encode(),
        body,
    ]
    write("verify_differential", name, b"\n".join(fields))
    write("envelope", name, body)
print(f"seeded {len(cases)} cases from {path}")
