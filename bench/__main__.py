"""``python -m agent_ng.bench [NAME ...] [--smoke] [--readme]``: run benchmarks (all by default)."""

from __future__ import annotations

import argparse

from agent_ng.bench.suite import MODULES, run

parser = argparse.ArgumentParser(prog="python -m agent_ng.bench", description=__doc__)
parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of: {', '.join(MODULES)}")
parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check it runs")
parser.add_argument("--readme", action="store_true", help="write the tables into bench/README.md")
args = parser.parse_args()
run(args.names, "smoke" if args.smoke else "full", readme=args.readme)
