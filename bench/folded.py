"""Summarise a py-spy ``--format raw`` profile (folded stacks): inclusive share per frame.

Run: ``.venv/bin/python bench/folded.py var/notify-profile.txt [--match app/] [--top 40]``.
"""

from __future__ import annotations

import argparse
from collections import Counter


def load(path: str) -> list[tuple[list[str], int]]:
    stacks = []
    with open(path) as folded:
        for line in folded:
            stack, _, count = line.rstrip().rpartition(" ")
            if stack:
                stacks.append((stack.split(";"), int(count)))
    return stacks


def inclusive(stacks: list[tuple[list[str], int]], match: str) -> Counter[str]:
    totals: Counter[str] = Counter()
    for frames, count in stacks:
        for frame in set(frames):
            if match in frame:
                totals[frame] += count
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("path")
    parser.add_argument("--match", default="")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    stacks = load(args.path)
    total = sum(count for _, count in stacks)
    print(f"{total} samples")
    for frame, count in inclusive(stacks, args.match).most_common(args.top):
        print(f"{count / total:6.1%}  {frame[:150]}")


if __name__ == "__main__":
    main()
