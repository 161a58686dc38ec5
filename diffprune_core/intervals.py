"""95% intervals over samples, and verdicts that only speak when the intervals do not overlap.

- :func:`mean_interval`: a mean over per-sample values (SSIM of each same-x_T pair), with Student's t
  interval of the mean.
- :func:`proportion_interval`: a rate over samples (class accuracy, confident digits), with Wilson's
  score interval (Wilson 1927), which stays inside [0, 1] for rates near 0 or 1.
- :func:`compare`: "higher", "lower" or "overlapping" for two intervals, the one word a reading may use.

These are intervals over the samples of one seed: they say how much a number would move with other
samples of the same models, not with another training seed.
"""
import math

import torch
from scipy import stats

from .errors import InputError

CONFIDENCE = 0.95


def mean_interval(values) -> dict:
    """{"value": mean, "low", "high"}: the t interval of the mean of per-sample ``values`` (at least 2)."""
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    if len(values) < 2:
        raise InputError(f"an interval needs at least 2 values, got {len(values)}")
    mean, sem = values.mean().item(), (values.std() / math.sqrt(len(values))).item()
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(values) - 1)) * sem
    return {"value": mean, "low": mean - half, "high": mean + half}


def proportion_interval(successes: int, n: int) -> dict:
    """{"value": successes / n, "low", "high"}: Wilson's score interval of a rate."""
    if n < 1 or not 0 <= successes <= n:
        raise InputError(f"a rate needs 0 <= successes <= n and n >= 1, got {successes} of {n}")
    z = float(stats.norm.ppf(0.5 + CONFIDENCE / 2))
    rate = successes / n
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"value": rate, "low": centre - half, "high": centre + half}


def compare(a: dict, b: dict) -> str:
    """'higher' or 'lower' if interval ``a`` lies wholly above or below ``b``, else 'overlapping'."""
    if a["low"] > b["high"]:
        return "higher"
    if a["high"] < b["low"]:
        return "lower"
    return "overlapping"


def formatted(interval: dict, spec: str = ".3f") -> str:
    """'0.812 [0.790, 0.834]'."""
    return f"{interval['value']:{spec}} [{interval['low']:{spec}}, {interval['high']:{spec}}]"
