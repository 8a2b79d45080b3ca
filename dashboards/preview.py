#!/usr/bin/env python3
"""Draws a Grafana dashboard's panels from a live Prometheus into one PNG, so a person (or a
test) can see what the dashboard shows without a Grafana server.

    preview.py DASHBOARD.json OUT.png [--prometheus http://127.0.0.1:9090] [--minutes 15]
               [--var pool=.*] [--check]

Each panel's queries run as range queries over the last --minutes (Grafana variables are
replaced: $__rate_interval by 1m, $__interval by the step, $var by --var values or `.*`).
Time series are drawn as lines, stat panels as their last value. A panel whose queries all
return nothing is drawn with "no data" in red; with --check the tool then exits 1, naming
the panels and queries (and 2 when a query is refused).
"""

import argparse
import json
import math
import re
import sys
import time
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def substitute(expr, variables, step):
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", f"{step}s")
    return re.sub(r"\$(\w+)", lambda m: variables.get(m.group(1), ".*"), expr)


def query_range(base, expr, start, end, step):
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{params}", timeout=30) as answer:
        body = json.load(answer)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body.get('error')}")
    return body["data"]["result"]


def legend_of(template, labels):
    if not template:
        return ", ".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dashboard")
    parser.add_argument("out")
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--minutes", type=float, default=15)
    parser.add_argument("--var", action="append", default=[], help="NAME=VALUE for a dashboard variable")
    parser.add_argument("--check", action="store_true", help="exit 1 if a panel shows no data")
    args = parser.parse_args()
    variables = dict(v.split("=", 1) for v in args.var)
    dashboard = json.load(open(args.dashboard))
    panels = sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    end = time.time()
    start = end - args.minutes * 60
    step = max(1, int(args.minutes * 60 / 240))
    columns = 3
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 3.2 * rows), squeeze=False)
    figure.suptitle(f"{dashboard['title']} — last {args.minutes:g} min", fontsize=15)
    empty, refused = [], []
    for ax, panel in zip(axes.flat, panels):
        ax.set_title(panel["title"], fontsize=10)
        drawn = 0
        last_values = []
        for target in panel["targets"]:
            expr = substitute(target["expr"], variables, step)
            try:
                series = query_range(args.prometheus, expr, start, end, step)
            except Exception as e:  # an invalid query is a finding, not a crash
                refused.append(f"{panel['title']}: {e}")
                continue
            for s in series:
                # NaN (0/0, no samples in a window) is not data.
                points = [(float(t), float(v)) for t, v in s["values"] if math.isfinite(float(v))]
                if not points:
                    continue
                drawn += 1
                label = legend_of(target.get("legendFormat", ""), s["metric"])
                last_values.append((label, points[-1][1]))
                if panel["type"] != "stat":
                    xs = [(t - end) / 60 for t, _ in points]
                    ax.plot(xs, [v for _, v in points], label=label, linewidth=1.2)
            if drawn == 0:
                empty.append(f"{panel['title']}: {expr}")
        if drawn == 0:
            ax.text(0.5, 0.5, "no data", color="red", ha="center", va="center", transform=ax.transAxes, fontsize=14)
        elif panel["type"] == "stat":
            total = sum(v for _, v in last_values)
            ax.text(0.5, 0.5, f"{total:,.4g}", ha="center", va="center", transform=ax.transAxes, fontsize=26)
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            ax.set_xlabel("minutes ago", fontsize=8)
            ax.tick_params(labelsize=8)
            if drawn <= 8:
                ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    figure.tight_layout()
    figure.savefig(args.out, dpi=80)
    for line in refused:
        print(f"refused: {line}", file=sys.stderr)
    for line in empty:
        print(f"no data: {line}", file=sys.stderr)
    if args.check and refused:
        sys.exit(2)
    if args.check and empty:
        sys.exit(1)


if __name__ == "__main__":
    main()
