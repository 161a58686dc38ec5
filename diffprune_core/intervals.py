"""95% intervals over samples, and verdicts that only speak when the intervals do not overlap.

- :func:`mean_interval`: a mean over per-sample values (SSIM of each same-x_T pair), with Student's t
  interval of the mean.
- :func:`proportion_interval`: a rate over samples (class accuracy, confident digits), with Wilson's
  score interval (Wilson 1927), which stays inside [0, 1] for rates near 0 or 1.
- :func:`compare`: "higher", "lower" or "overlapping" for two intervals, the one word a reading may use.
- :func:`over_seeds`: the mean of a metric over runs that differ only in their seed (the pruning batch,
  the noise of Algorithm 1, the fine-tuning order and x_T), with the t interval of that mean; then
  :func:`best` and :func:`ranking` say which rows the intervals separate.

The intervals over samples say how much a number would move with other samples of the same models;
only the intervals over seeds include another training seed.
"""
import math

import pandas as pd
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
    if math.isnan(a["low"]) or math.isnan(b["low"]):  # one seed: no interval, nothing is told apart
        return "overlapping"
    if a["low"] > b["high"]:
        return "higher"
    if a["high"] < b["low"]:
        return "lower"
    return "overlapping"


def formatted(interval: dict, spec: str = ".3f") -> str:
    """'0.812 [0.790, 0.834]'; '0.812 (one seed)' without bounds."""
    if math.isnan(interval["low"]):
        return f"{interval['value']:{spec}} (one seed)"
    return f"{interval['value']:{spec}} [{interval['low']:{spec}}, {interval['high']:{spec}}]"


def over_seeds(runs, columns: list, *, by: str = "row"):
    """One row per ``by`` group of ``runs`` (one run per seed): the first run's other columns, and for each of
    ``columns`` the mean over the seeds, its t interval ('<column>_low', '<column>_high'), the seeds' standard
    deviation ('<column>_std') and their number ('seeds'). A group with one seed gets no interval (NaN)."""
    rows = []
    for _, group in runs.groupby(by, sort=True):
        row = group.iloc[0].to_dict() | {"seeds": len(group)}
        for column in columns:
            values = group[column].astype(float)
            interval = (mean_interval(values.tolist()) if len(values) > 1
                        else {"value": values.iloc[0], "low": math.nan, "high": math.nan})
            row |= {column: interval["value"], f"{column}_low": interval["low"], f"{column}_high": interval["high"],
                    f"{column}_std": values.std() if len(values) > 1 else math.nan}
        rows.append(row)
    return pd.DataFrame(rows)


def of_row(row, column: str) -> dict:
    """The interval of ``column`` in an :func:`over_seeds` row, as :func:`compare` takes it."""
    return {"value": row[column], "low": row[f"{column}_low"], "high": row[f"{column}_high"]}


def best(labels: list, intervals: list, *, lower: bool = True) -> dict:
    """The label with the best mean, and those whose intervals overlap its interval (not told apart from it).

    ``lower``: lower is better (FID). An interval with NaN bounds (one seed) overlaps everything.
    """
    if not labels:
        raise InputError("nothing to rank")
    order = sorted(range(len(labels)), key=lambda i: intervals[i]["value"] * (1 if lower else -1))
    top = order[0]
    tied = [labels[i] for i in order[1:] if compare(intervals[i], intervals[top]) == "overlapping"]
    return {"label": labels[top], "tied_with": tied, "separated": not tied}


def ranking(labels: list, intervals: list, *, lower: bool = True) -> str:
    """Labels from best to worst mean, joined by '<' ('>' when higher is better) where the intervals separate and
    '~' where they overlap: 'magnitude < random ~ taylor' (FID: lower is better, the default)."""
    order = sorted(range(len(labels)), key=lambda i: intervals[i]["value"] * (1 if lower else -1))
    text = labels[order[0]]
    for before, after in zip(order, order[1:]):
        separated = compare(intervals[before], intervals[after]) != "overlapping"
        text += (" ~ " if not separated else " < " if lower else " > ") + labels[after]
    return text
