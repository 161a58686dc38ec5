"""Is one teacher better than another? FID over independent sets of samples, paired by x_T (issue 11, item 4).

Every teacher draws the same ``--sets`` sets of ``--n`` samples (set k from seed 1000 + k, 100 DDIM steps, as
``benchmarks/fid_intervals.py``), so set k of two teachers starts from the same x_T. Printed per teacher: FID
(digits features, against all the digits) as the mean over the sets with its t interval, and the share of samples
the digits classifier reads confidently with its Wilson interval; then, for each teacher after the first, the
mean paired difference of FID (this one minus the first) with its t interval over the sets, and the verdict from
whether the intervals separate (:func:`intervals.compare`).

    .venv/bin/python benchmarks/teacher_recipes.py data/teacher OTHER_TEACHER [--sets 8] [--n 256] [--out F.csv]
"""
import argparse

import pandas as pd

from diffprune_core.digits_classifier import classify_samples
from diffprune_core.experiments import RunSpec, load_teacher
from diffprune_core.fid import fid
from diffprune_core.intervals import compare, formatted, mean_interval, proportion_interval
from diffprune_core.sampling import ddim_sample


def measure_teacher(folder: str, sets: int, n: int, steps: int) -> pd.DataFrame:
    """One row per set: its FID and how many of its samples the classifier reads confidently."""
    model, examples = load_teacher(RunSpec(teacher=folder))
    rows = []
    for k in range(sets):
        samples = ddim_sample(model, n=n, seed=1000 + k, steps=steps, progress=False)
        judged = classify_samples(samples)
        rows.append({"teacher": folder, "set": k, "fid": fid(samples, examples.images, reference_name="digits-all")["value"],
                     "confident": round(judged["confident_rate"] * n), "n": n})
        print(f"{folder} set {k}: FID {rows[-1]['fid']:.2f}, confident {rows[-1]['confident']} of {n}", flush=True)
    return pd.DataFrame(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teachers", nargs="+", help="teacher folders (data/teacher first: the others are compared to it)")
    parser.add_argument("--sets", type=int, default=8, help="independent sets of samples per teacher (default 8)")
    parser.add_argument("--n", type=int, default=256, help="samples per set (default 256)")
    parser.add_argument("--steps", type=int, default=100, help="DDIM steps (default 100)")
    parser.add_argument("--out", default=None, help="CSV of every set of every teacher (optional)")
    args = parser.parse_args()
    sets = pd.concat([measure_teacher(folder, args.sets, args.n, args.steps) for folder in args.teachers])
    if args.out:
        sets.to_csv(args.out, index=False)
    first = sets[sets["teacher"] == args.teachers[0]].reset_index(drop=True)
    print(f"\n{args.sets} sets of {args.n} samples per teacher, {args.steps} DDIM steps; 95% intervals")
    for folder in args.teachers:
        mine = sets[sets["teacher"] == folder].reset_index(drop=True)
        fids = mean_interval(mine["fid"].tolist())
        confident = proportion_interval(int(mine["confident"].sum()), int(mine["n"].sum()))
        print(f"{folder}: FID {formatted(fids, '.2f')}, confident {formatted(confident, '.3f')}")
        if folder != args.teachers[0]:
            difference = mean_interval((mine["fid"] - first["fid"]).tolist())
            verdict = compare(fids, mean_interval(first["fid"].tolist()))
            print(f"  FID minus {args.teachers[0]}'s, paired by set: {formatted(difference, '.2f')}; "
                  f"this teacher's FID interval against the first's: {verdict}")


if __name__ == "__main__":
    main()
