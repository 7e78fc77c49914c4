"""Summarise py-spy's collapsed stacks (``--format raw``): where the server's time goes.

    python bench/profile_summary.py bench/results/profile-*/relay.ack.txt [--top 25]

Prints the share of samples per thread role, the functions with the most *self* time and
the functions with the most *inclusive* time (each counted once per stack).
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*?)(?::(?P<line>\d+))?\)$")


def short(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (file.py)``: lines merged per function."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("/site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({path})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    for path in args.files:
        self_time: collections.Counter[str] = collections.Counter()
        incl: collections.Counter[str] = collections.Counter()
        roots: collections.Counter[str] = collections.Counter()
        total = 0
        for line in path.read_text().splitlines():
            stack, _, count_s = line.rpartition(" ")
            if not stack or not count_s.isdigit():
                continue
            count = int(count_s)
            frames = [short(f) for f in stack.split(";") if f]
            if not frames:
                continue
            total += count
            # py-spy puts the thread ("process N:..." / "thread (0x..)") first when asked;
            # otherwise the first frame names the thread's entry point.
            roots[frames[min(1, len(frames) - 1)] if len(frames) > 1 else frames[0]] += count
            self_time[frames[-1]] += count
            for f in set(frames):
                incl[f] += count
        print(f"== {path} ({total} samples)")
        if not total:
            continue
        print("-- by thread entry point")
        for name, n in roots.most_common(8):
            print(f"{100 * n / total:6.1f}%  {name}")
        print("-- self time")
        for name, n in self_time.most_common(args.top):
            print(f"{100 * n / total:6.1f}%  {name}")
        print("-- inclusive time")
        for name, n in incl.most_common(args.top):
            print(f"{100 * n / total:6.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
