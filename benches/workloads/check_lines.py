#!/usr/bin/env python3
"""check_lines.py FILE N: audit a log file written by `lines N` (possibly with a supervisor's
prefix before each line). Prints "intact_unique missing duplicated torn".
A line is intact when it ends with "L%08d " + 80 x's + " E%08d" with both numbers equal;
any other line that carries a piece of such a line (an L-number or a run of x's) is torn."""
import re
import sys

path, n = sys.argv[1], int(sys.argv[2])
whole = re.compile(rb"L(\d{8}) x{80} E(\d{8})\r?$")
piece = re.compile(rb"L\d{8} |xxxxxxxxxx| E\d{8}")
seen = bytearray(n + 1)
dup = torn = 0
with open(path, "rb") as f:
    for raw in f:
        line = raw.rstrip(b"\n")
        m = whole.search(line)
        if m and m.group(1) == m.group(2):
            k = int(m.group(1))
            if 1 <= k <= n:
                if seen[k]:
                    dup += 1
                else:
                    seen[k] = 1
                continue
        if piece.search(line):
            torn += 1
intact = sum(seen)
print(intact, n - intact, dup, torn)
