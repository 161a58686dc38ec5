"""The book's runs one after another against several at once (issue 12, item 4; :mod:`diffprune_core.workers`).

A small Table 1 (random, magnitude and scratch training at ratio 0.3, seeds 0 and 1, with the teacher's run
they are measured against) computed by :func:`experiments.table` in a fresh folder with ``--workers`` processes
and with one, in alternation (``metrics.alternated``); printed: each side's median seconds, their ratio
(median and range over the rounds) and whether the two tables hold the same numbers. Every run computes with
one torch thread either way; the figures in the module docstring of ``workers`` compare that with two threads.

    .venv/bin/python benchmarks/parallel_runs.py [--repeats 1] [--train-steps 100] [--n-samples 64] [--workers 2]
"""
import argparse
import tempfile
from dataclasses import replace

import pandas as pd

from diffprune_core.experiments import TIMING_METRICS, RunSpec, table
from diffprune_core.metrics import alternated, seconds_of
from diffprune_core.workers import default_workers

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="timed rounds after one warm-up round (default 1)")
    parser.add_argument("--train-steps", type=int, default=100, help="fine-tuning steps of each run (default 100)")
    parser.add_argument("--n-samples", type=int, default=64, help="samples of each run (default 64)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="processes at once (default: cores)")
    args = parser.parse_args()
    base = RunSpec(train_steps=args.train_steps, n_samples=args.n_samples)
    specs = [replace(base, method=method, seed=seed) for seed in (0, 1) for method in ("random", "magnitude", "scratch")]
    tables = {}

    def computed(workers: int):
        def work():
            with tempfile.TemporaryDirectory() as root:
                computed_table = table(specs, root=root, progress=False, workers=workers)
                tables[workers] = computed_table.drop(columns=list(TIMING_METRICS))
        return work

    timed = alternated(seconds_of(computed(1)), seconds_of(computed(args.workers)), repeats=args.repeats)
    pd.testing.assert_frame_equal(tables[1], tables[args.workers])
    print(f"{len(specs)} runs of {args.train_steps} fine-tuning steps and {args.n_samples} samples, plus the teacher's "
          f"run; {args.repeats} round(s) after a warm-up\n")
    print("| one at a time s | {0} at once s | speed-up (range) | same numbers |\n|---|---|---|---|".format(args.workers))
    print(f"| {timed['seconds']:.0f} | {timed['reference_seconds']:.0f} | {timed['ratio']:.2f}x "
          f"({timed['ratio_low']:.2f}-{timed['ratio_high']:.2f}) | yes |")


if __name__ == "__main__":
    main()
