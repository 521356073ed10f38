#!/usr/bin/env python3
"""Writes a large StackExchange Posts.xml built from the real coffee.stackexchange.com rows, repeated
with Ids (and ParentId / AcceptedAnswerId) shifted per copy, for the curation throughput benchmark.
    python3 ci/make-big-posts.py OUT.xml SIZE_MB"""
import re
import sys

SRC = "../shared/data/stackexchange/coffee.stackexchange.com/Posts.xml"


def main():
    out, size_mb = sys.argv[1], int(sys.argv[2])
    rows = [l for l in open(SRC, encoding="utf-8-sig") if l.lstrip().startswith("<row ")]
    ids = re.compile(r'( (?:Id|ParentId|AcceptedAnswerId)=")(\d+)(")')
    target, written, copy = size_mb * 1024 * 1024, 0, 0
    with open(out, "w", encoding="utf-8") as f:
        f.write('\ufeff<?xml version="1.0" encoding="utf-8"?>\n<posts>\n')
        while written < target:
            off = copy * 1_000_000
            chunk = "".join(ids.sub(lambda m: f"{m.group(1)}{int(m.group(2)) + off}{m.group(3)}", r) for r in rows)
            f.write(chunk)
            written += len(chunk.encode("utf-8"))
            copy += 1
        f.write("</posts>\n")
    print(f"{out}: {written / 1e6:.0f} MB, {copy} copies of {len(rows)} real rows")


if __name__ == "__main__":
    main()
