"""Where a build of the book spent its time: per chapter, its wall time and the phases of the runs it computed.

A thin command around :func:`diffprune_core.results.build_profile` (which the provenance chapter,
notebooks/11_provenance, also plots): reads ``results/<chapter>/default/metadata.json`` and
``results/runs/*/metrics.json``.

    .venv/bin/python tools/build_profile.py [--results results] [--csv profile.csv]
"""
import argparse
from pathlib import Path

from diffprune_core.results import build_profile


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(Path(__file__).resolve().parent.parent / "results"))
    parser.add_argument("--csv", default=None, help="also write the table (minutes) to this CSV")
    args = parser.parse_args()
    table = build_profile(root=args.results)
    if args.csv:
        table.to_csv(args.csv, index=False)
    print("minutes of the last build of each chapter (runs: computed there, not read back)\n")
    print(table.to_markdown(index=False, floatfmt=".1f"))


if __name__ == "__main__":
    main()
