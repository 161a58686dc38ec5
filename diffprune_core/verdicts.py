"""The sentences the chapters say about their tables, computed from intervals (:mod:`intervals`).

A chapter may say "beats", "best" or "ranks" only through these functions: ours are means over seeds
with a t interval ('<column> low' / '<column> high' beside '<column>', as :func:`figures.our_rows` and
:func:`figures.beside_paper` write them); the paper's numbers have no interval and count as exact.
Where two intervals overlap, the sentence says that the rows are not told apart.
"""
import math

import pandas as pd

from .intervals import best, compare, ranking

BASELINES = ("random", "magnitude", "taylor")


def interval(row, column: str) -> dict:
    """``column`` of a table row as an interval: its own bounds if the table has them, else exact."""
    value = float(row[column])
    low, high = row.get(f"{column} low", math.nan), row.get(f"{column} high", math.nan)
    if f"{column} low" not in row.index:
        low = high = value
    return {"value": value, "low": float(low), "high": float(high)}


def best_sentence(result: dict) -> str:
    """'Diff-Pruning (T = 0.05), separated from every other row by the intervals' or '..., but the intervals do
    not separate it from A and B'."""
    if result["separated"]:
        return f"{result['label']}, separated from every other row by the intervals"
    return f"{result['label']}, but the intervals do not separate it from {' and '.join(result['tied_with'])}"


def table1_claims(table: pd.DataFrame, source: str) -> dict:
    """What Table 1 claims, measured on one source ('ours', 'CIFAR-10', 'CelebA-HQ') of a joined table: how many
    pruned rows beat scratch training at their budget (and how many are not told apart from it), the best
    FID, the order of the baselines and whether the longest scratch training catches up with the best."""
    fid = next(c for c in table if c.startswith(f"{source} FID") and not c.endswith((" low", " high")))
    ssim, steps = f"{source} SSIM", table[f"{source} train steps"].map(as_number)
    pruned = table[table["method"].isin(["random", "magnitude", "taylor", "diff-pruning"])]
    scratch = table[table["method"] == "scratch"]
    same = scratch[steps[scratch.index] == steps[pruned.index[0]]]
    longest = scratch.loc[steps[scratch.index].idxmax()]
    claims = {"n_pruned": len(pruned)}
    for metric, better in ((fid, "lower"), (ssim, "higher")):
        name = "fid" if metric == fid else "ssim"
        if not len(same) or pd.isna(same.iloc[0][metric]) or pruned[metric].isna().all():
            claims |= {f"{name}_beats_scratch": 0, f"{name}_ties_scratch": 0}
            continue
        verdicts = [compare(interval(row, metric), interval(same.iloc[0], metric)) for _, row in pruned.iterrows()
                    if pd.notna(row[metric])]
        claims |= {f"{name}_beats_scratch": verdicts.count(better), f"{name}_ties_scratch": verdicts.count("overlapping")}
    fids = [interval(row, fid) for _, row in pruned.iterrows()]
    top = best(list(pruned["row"]), fids)
    top_row = pruned[pruned["row"] == top["label"]].iloc[0]
    baselines = pruned[pruned["method"].isin(BASELINES)]
    ssims = pruned[pruned[ssim].notna()]
    catches_up = compare(interval(longest, fid), interval(top_row, fid))
    return claims | {
        "scratch_fid": float(same.iloc[0][fid]) if len(same) else math.nan,
        "best_fid_row": top["label"], "best_fid_sentence": best_sentence(top), "best_fid": float(top_row[fid]),
        "best_ssim_sentence": (best_sentence(best(list(ssims["row"]), [interval(r, ssim) for _, r in ssims.iterrows()],
                                                  lower=False)) if len(ssims) else "not reported"),
        "longest_scratch_fid": float(longest[fid]), "longest_scratch_steps": f"{as_number(longest[f'{source} train steps']):,.0f}",
        "scratch_catches_up": {"lower": "overtakes", "overlapping": "is not told apart from",
                               "higher": "stays behind"}[catches_up],
        "fid_spread": float(pruned[fid].max() - pruned[fid].min()),
        "criteria_order": ranking([r.replace(" pruning", "") for r in baselines["row"]],
                                  [interval(row, fid) for _, row in baselines.iterrows()]),
    }


def as_number(steps) -> float:
    """Training steps as a number: ours already are, the paper's read '100K' or '4.4M'."""
    if isinstance(steps, str):
        return float(steps[:-1]) * {"K": 1e3, "M": 1e6}[steps[-1]]
    return float(steps)


def orders_agree(ours: str, theirs: str) -> bool:
    """Whether a :func:`intervals.ranking` of ours is consistent with the paper's exact order: the paper's order
    read left to right never contradicts a '<' of ours (ties '~' of ours agree with any order)."""
    position = {label: i for i, label in enumerate(theirs.replace(" ~ ", " < ").split(" < "))}
    blocks = [block.split(" ~ ") for block in ours.split(" < ")]
    return all(position[a] < position[b] for earlier, later in zip(blocks, blocks[1:]) for a in earlier for b in later)


def threshold_claims(table: pd.DataFrame, source: str) -> dict:
    """What Table 5 claims on one source of a joined table: the threshold with the best FID (and those the
    intervals do not separate from it), and whether the full expansion (T = 0) is told apart from it."""
    fid = next(c for c in table if c.startswith(f"{source} FID") and not c.endswith((" low", " high")))
    rows = table[table[fid].notna()]
    labels = [f"T = {t:g}" for t in rows["threshold"]]
    top = best(labels, [interval(row, fid) for _, row in rows.iterrows()])
    top_row = rows.iloc[labels.index(top["label"])]
    full = rows[rows["threshold"] == 0]
    versus_full = (compare(interval(full.iloc[0], fid), interval(top_row, fid)) if len(full) and top_row["threshold"]
                   else "same")
    return {"best_threshold": float(top_row["threshold"]), "best_sentence": best_sentence(top),
            "best_fid": float(top_row[fid]), "best_timesteps": float(top_row[f"{source} timesteps used"]),
            "full_fid": float(full.iloc[0][fid]) if len(full) else math.nan,
            "full_versus_best": {"same": "the full expansion has the best mean FID",
                                 "higher": "the full expansion is worse, beyond the intervals",
                                 "overlapping": "the full expansion is not told apart from it by the intervals",
                                 "lower": "the full expansion is better"}[versus_full],
            "fid_range": float(rows[fid].max() - rows[fid].min())}


def timestep_reading(curve: pd.DataFrame) -> str:
    """Figure 5's reading of a curve with columns 'timesteps', 'ssim', 'ssim low', 'ssim high' (means over
    seeds): do more timesteps help, hurt after a peak, or not change SSIM beyond the intervals?"""
    rows = [curve.iloc[i] for i in range(len(curve))]
    points = [interval(row, "ssim") for row in rows]
    peak = max(range(len(rows)), key=lambda i: points[i]["value"])
    first, last = rows[0], rows[-1]
    k = lambda row: int(row["timesteps"])  # noqa: E731
    rise = compare(points[peak], points[0])
    fall = compare(points[peak], points[-1])
    if rise != "higher":
        return (f"SSIM does not rise beyond the intervals over seeds from k = {k(first)} to the best mean at "
                f"k = {k(rows[peak])} ({points[peak]['value']:.3f}): neither of the paper's two patterns shows here.")
    if peak == len(rows) - 1 or fall == "overlapping":
        return (f"SSIM rises from {points[0]['value']:.3f} at k = {k(first)} to {points[peak]['value']:.3f} at "
                f"k = {k(rows[peak])}, beyond the intervals over seeds, and with all {k(last)} timesteps it is not told "
                "apart from that peak: the early timesteps matter, as in both of the paper's curves, and the late ones "
                "neither hurt measurably (as on CIFAR-10) nor help beyond the intervals.")
    return (f"SSIM rises from {points[0]['value']:.3f} at k = {k(first)} to a peak of {points[peak]['value']:.3f} at "
            f"k = {k(rows[peak])} and falls to {points[-1]['value']:.3f} with {k(last)}, beyond the intervals over "
            "seeds: the late timesteps hurt, the paper's CIFAR-10 pattern.")


def speedup_reading(row) -> str:
    """What a measured time ratio (median with the range of its rounds, :func:`metrics.forward_speedups`) says
    against the MACs ratio: whether the pruned U-Net is faster at all, and whether its time fell as far as its
    MACs did."""
    low, high, macs = row["time_ratio_low"], row["time_ratio_high"], row["macs_ratio"]
    if low <= 1 <= high:
        return "not told apart from the dense U-Net's time"
    if high > 1:
        return "slower than the dense U-Net"
    if low <= macs <= high:
        return "faster, as far as the MACs predict"
    return "faster, but less than the MACs predict" if low > macs else "faster than even the MACs predict"


def rounding_reading(paper_widths, rounded) -> str:
    """Whether rounded widths changed the measured time ratio of :func:`speedup_reading`'s rows, by their ranges."""
    side = compare(*({"value": row["time_ratio"], "low": row["time_ratio_low"], "high": row["time_ratio_high"]}
                     for row in (rounded, paper_widths)))
    return {"lower": "faster with rounded widths", "higher": "slower with rounded widths",
            "overlapping": "not told apart by the ranges"}[side]
