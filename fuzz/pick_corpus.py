#!/usr/bin/env python3
"""Picks a small corpus worth committing: greedy set cover of coverage features.

Reads a libFuzzer merge control file (from `<target binary> -merge=1 -merge_control_file=CTL OUT
DIR...`), counts the features of the inputs under the paths given with --given (read at run time
anyway, e.g. tests/fixtures) as covered, then picks at most BUDGET other inputs, each adding the
most features not yet covered, and prints their paths.

usage: fuzz/pick_corpus.py CONTROL_FILE BUDGET [--given PATH_PREFIX]...
"""

import sys


def main():
    args = sys.argv[1:]
    given = [args[i + 1] for i, a in enumerate(args) if a == "--given"]
    args = [a for i, a in enumerate(args) if a != "--given" and (i == 0 or args[i - 1] != "--given")]
    if len(args) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    control, budget = args[0], int(args[1])
    lines = open(control).read().splitlines()
    count = int(lines[0])
    files = lines[2 : 2 + count]
    features = {}
    for line in lines[2 + count :]:
        if line.startswith("FT "):
            _, index, *cov = line.split()
            features[int(index)] = set(cov)
    covered = set()
    candidates = {}
    for index, path in enumerate(files):
        if any(path.startswith(prefix) for prefix in given):
            covered |= features.get(index, set())
        else:
            candidates[index] = features.get(index, set())
    every = covered.union(*candidates.values())
    start = len(covered)
    picked = []
    while len(picked) < budget and candidates:
        best = max(candidates, key=lambda i: (len(candidates[i] - covered), -i))
        gain = candidates.pop(best) - covered
        if not gain:
            break
        covered |= gain
        picked.append(files[best])
    print(
        f"features: {start} from the given inputs, {len(covered)} with {len(picked)} picked, {len(every)} in all",
        file=sys.stderr,
    )
    print("\n".join(picked))


if __name__ == "__main__":
    main()
