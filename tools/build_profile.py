"""Where a build of the book spent its time: per chapter, its wall time and the phases of the runs it computed.

Reads ``results/<chapter>/default/metadata.json`` (the chapter's wall time and when it finished) and
``results/runs/*/metrics.json`` (each run's ``phases_s`` and when it finished). A run belongs to the chapter
whose execution window holds its finish: the chapter that computed it (later ones read it back). "other" is
the rest of a chapter's time: Algorithm 1 passes shared between runs (``experiments.share_gradient_sums``),
Figure 5's and chapter 9's own pruning, sampling and timing, LD-Pruner's scoring, tables and plots.

    .venv/bin/python tools/build_profile.py [--results results] [--csv profile.csv]
"""
import argparse
import json
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

PHASES = ("pruning", "fine_tuning", "sampling", "measuring")


def when(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z")


def profile(results: Path) -> pd.DataFrame:
    chapters = []
    for path in sorted(results.glob("[0-9][0-9]_*/default/metadata.json")):
        metadata = json.loads(path.read_text())
        end = when(metadata["finished"])
        chapters.append({"chapter": path.parent.parent.name, "start": end - timedelta(seconds=metadata["wall_time_s"]),
                         "end": end, "wall": metadata["wall_time_s"], "runs": 0, **dict.fromkeys(PHASES, 0.0)})
    for path in results.glob("runs/*/metrics.json"):
        metrics = json.loads(path.read_text())
        if "phases_s" not in metrics:  # a run from before phases were recorded
            continue
        finished = when(metrics["finished"])
        for chapter in chapters:
            if chapter["start"] <= finished <= chapter["end"] + timedelta(seconds=1):
                chapter["runs"] += 1
                for phase in PHASES:
                    chapter[phase] += metrics["phases_s"].get(phase, 0.0)
    table = pd.DataFrame(chapters, columns=["chapter", "start", "end", "wall", "runs", *PHASES]).drop(
        columns=["start", "end"])
    table["other"] = table["wall"] - table[list(PHASES)].sum(axis=1)
    total = table.sum(numeric_only=True).to_frame().T.assign(chapter="all")
    minutes = pd.concat([table, total], ignore_index=True)
    for column in ["wall", *PHASES, "other"]:
        minutes[column] = minutes[column] / 60
    return minutes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(Path(__file__).resolve().parent.parent / "results"))
    parser.add_argument("--csv", default=None, help="also write the table (minutes) to this CSV")
    args = parser.parse_args()
    table = profile(Path(args.results))
    if args.csv:
        table.to_csv(args.csv, index=False)
    print("minutes of the last build of each chapter (runs: computed there, not read back)\n")
    print(table.to_markdown(index=False, floatfmt=".1f"))


if __name__ == "__main__":
    main()
