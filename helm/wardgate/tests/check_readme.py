#!/usr/bin/env python3
"""The chart README's values table and values.yaml agree: every key in the table exists, and
every value has a row (itself or a parent). Usage: check_readme.py CHART_DIR"""

import re
import sys
from pathlib import Path

import yaml

# Maps whose keys are the user's (a row for the map covers them).
OPAQUE = {"wardgate.config", "metrics.allowedFrom", "podSecurityContext", "updateStrategy"}


def leaves(v, path=""):
    if isinstance(v, dict) and v and path not in OPAQUE:
        for k, x in v.items():
            yield from leaves(x, f"{path}.{k}" if path else k)
    else:
        yield path


def exists(values, key):
    cur = values
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False
        cur = cur[part]
    return True


def main(chart: Path) -> int:
    values = yaml.safe_load((chart / "values.yaml").read_text(encoding="utf-8"))
    table = (chart / "README.md").read_text(encoding="utf-8").split("## Values", 1)[1].split("\n## ", 1)[0]
    documented = []
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        last = None
        for key in re.findall(r"`([^`]+)`", line.split("|")[1]):
            if key.startswith(".") and last:
                key = last.rsplit(".", 1)[0] + key
            documented.append(key)
            last = key
    failures = [f"README documents `{k}`, which values.yaml lacks" for k in documented if not exists(values, k)]
    for leaf in leaves(values):
        if not any(leaf == k or leaf.startswith(k + ".") for k in documented):
            failures.append(f"values.yaml has `{leaf}`, which the README's values table lacks")
    for f in failures:
        print(f"FAIL {f}")
    print(f"README values table: {len(documented)} keys, {len(failures)} problems")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
