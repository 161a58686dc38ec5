"""How far FID moves with other samples, and whether one set of samples can tell (issue 11, item 3).

The teacher draws ``--sets`` independent sets of ``--n`` samples (each its own x_T, seeds 1000, 1001, ...);
the spread of their FIDs is what an interval over samples must cover. From each set alone, two resampling
estimates are tried: the bootstrap (``--resamples`` draws with repeats; percentile interval and the "basic"
interval reflected about the set's FID) and the delete-one jackknife (standard error sqrt((n-1)/n sum
(FID_-i - mean)^2), interval +- 1.96 SE). Printed per set and summarised: the sets' mean FID and standard
deviation, each method's mean half-width and how often its interval covers the sets' mean FID, and the
bootstrap's bias (mean bootstrap FID minus the set's FID). ``experiments.measure`` uses independent sets
(``RunSpec.fid_sets``) because of what this prints.

    .venv/bin/python benchmarks/fid_intervals.py [--sets 16] [--n 128] [--resamples 500] [--out fid_intervals.csv]
"""
import argparse

import numpy as np
import pandas as pd
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.utils import get_featuresdict_from_dataset

from diffprune_core.data import load_images
from diffprune_core.experiments import RunSpec, load_teacher
from diffprune_core.fid import Uint8Images, build_extractor, extractor_arguments
from diffprune_core.sampling import ddim_sample


def features_of(images: torch.Tensor, extractor) -> np.ndarray:
    """The digits classifier's FID features of images in [-1, 1], by torch-fidelity (as fid.fid_statistics)."""
    features = get_featuresdict_from_dataset(Uint8Images(images), extractor, 64, cuda=False, save_cpu_ram=True,
                                             verbose=False)
    return features[extractor.get_requested_features_list()[0]].double().numpy()


def fid_of(features: np.ndarray, reference: dict) -> float:
    statistics = fid_features_to_statistics(torch.from_numpy(features))
    return float(fid_statistics_to_metric(statistics, reference, verbose=False)[KEY_METRIC_FID])


def one_set(features: np.ndarray, reference: dict, resamples: int, seed: int) -> dict:
    """A set's FID, its bootstrap (percentile and basic 95% intervals, mean) and its jackknife (SE, interval)."""
    value, n = fid_of(features, reference), len(features)
    rng = np.random.default_rng(seed)
    boot = np.array([fid_of(features[rng.integers(0, n, n)], reference) for _ in range(resamples)])
    low, high = np.percentile(boot, [2.5, 97.5])
    leave_one_out = np.array([fid_of(np.delete(features, i, axis=0), reference) for i in range(n)])
    se = float(np.sqrt((n - 1) / n * ((leave_one_out - leave_one_out.mean()) ** 2).sum()))
    return {"fid": value, "bootstrap mean": boot.mean(), "percentile low": low, "percentile high": high,
            "basic low": 2 * value - high, "basic high": 2 * value - low, "jackknife se": se,
            "jackknife low": value - 1.96 * se, "jackknife high": value + 1.96 * se}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=16, help="independent sets of samples (default 16)")
    parser.add_argument("--n", type=int, default=128, help="samples per set (default 128, as Tables 1 and 5)")
    parser.add_argument("--resamples", type=int, default=500, help="bootstrap draws per set (default 500)")
    parser.add_argument("--steps", type=int, default=100, help="DDIM steps (default 100)")
    parser.add_argument("--out", default=None, help="CSV of every set (optional)")
    args = parser.parse_args()
    model, _ = load_teacher(RunSpec())
    extractor = build_extractor(extractor_arguments("digits"))
    real = load_images("digits", image_size=model.image_shape[-1], channels=1)
    reference = fid_features_to_statistics(torch.from_numpy(features_of(real, extractor)))
    rows = []
    for k in range(args.sets):
        samples = ddim_sample(model, n=args.n, seed=1000 + k, steps=args.steps, progress=False)
        rows.append({"set": k, **one_set(features_of(samples, extractor), reference, args.resamples, seed=k)})
        print(f"set {k}: " + ", ".join(f"{key} {value:.2f}" for key, value in rows[-1].items() if key != "set"), flush=True)
    sets = pd.DataFrame(rows)
    if args.out:
        sets.to_csv(args.out, index=False)
    truth, spread = sets["fid"].mean(), sets["fid"].std()
    print(f"\n{args.sets} independent sets of {args.n} samples: FID mean {truth:.2f}, standard deviation {spread:.2f} "
          f"(the spread an interval over samples must cover; a 95% interval of one set is about +-{1.96 * spread:.2f})")
    print(f"bootstrap: mean of the resampled FIDs exceeds the set's FID by {(sets['bootstrap mean'] - sets['fid']).mean():.2f}"
          " on average (repeated samples look like a narrower distribution)")
    for method in ("percentile", "basic", "jackknife"):
        low, high = sets[f"{method} low"], sets[f"{method} high"]
        print(f"{method:>10}: mean half-width {((high - low) / 2).mean():.2f}, covers the sets' mean FID in "
              f"{((low <= truth) & (truth <= high)).mean():.0%} of the sets")


if __name__ == "__main__":
    main()
