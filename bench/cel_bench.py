"""CRD validation rules: what ``x-kubernetes-validations`` cost per object written.

Run: .venv/bin/python bench/cel_bench.py [--objects N]
Validates the Kubernetes docs' CronTab-like object (three rules on spec, one transition
rule, one rule on each of 10 list items) in process, and the same object against the
schema alone, so the difference is the rules' cost. Prints one line per figure; record
them in docs/performance.md with the machine and date.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubling.api import celrules, crdschema

SCHEMA = {"type": "object", "properties": {"spec": {
    "type": "object",
    "x-kubernetes-validations": [
        {"rule": "self.replicas <= self.maxReplicas", "message": "replicas too high"},
        {"rule": "self.image.lowerAscii() == self.image"},
        {"rule": "self.items.all(i, i.size >= 0)"},
        {"rule": "self.replicas >= oldSelf.replicas", "message": "no scale down"}],
    "properties": {
        "replicas": {"type": "integer"}, "maxReplicas": {"type": "integer"},
        "image": {"type": "string"},
        "items": {"type": "array", "items": {
            "type": "object", "properties": {"name": {"type": "string"},
                                             "size": {"type": "integer"}},
            "x-kubernetes-validations": [{"rule": "size(self.name) < 64"}]}}}}}}


def crontab(replicas: int) -> dict[str, object]:
    return {"apiVersion": "x.dev/v1", "kind": "CronTab", "metadata": {"name": "c"},
            "spec": {"replicas": replicas, "maxReplicas": 10, "image": "nginx",
                     "items": [{"name": f"i{n}", "size": n} for n in range(10)]}}


def timed(fn: object, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=300)
    args = parser.parse_args()
    old, new = crontab(3), crontab(4)
    started = time.perf_counter()
    assert celrules.validate(new, old, SCHEMA) == []  # first use: imports cel-python
    print(f"first validation (imports and compiles): {(time.perf_counter() - started) * 1e3:.0f} ms")
    schema_only = timed(lambda: crdschema.validate(new, SCHEMA), args.objects)
    with_rules = timed(lambda: celrules.validate(new, old, SCHEMA), args.objects)
    for label, samples in (("schema validation alone", schema_only),
                           ("CEL rules (14 evaluations)", with_rules)):
        ordered = sorted(samples)
        print(f"{label}: p50 {statistics.median(ordered) * 1e3:.2f} ms, "
              f"p99 {ordered[int(len(ordered) * 0.99) - 1] * 1e3:.2f} ms per object")


if __name__ == "__main__":
    main()
