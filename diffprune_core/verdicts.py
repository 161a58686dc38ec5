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
    """``column`` of a table row (or a run's metrics) as an interval: its bounds where the row has them ('<column>
    low'/'<column> high', '<column>_low'/'<column>_high', or the pair '<column>_interval' that
    :func:`experiments.measure` writes), else exact (the paper's numbers)."""
    value = float(row[column])
    for low, high in ((f"{column} low", f"{column} high"), (f"{column}_low", f"{column}_high")):
        if low in row and high in row:
            return {"value": value, "low": float(row[low]), "high": float(row[high])}
    if f"{column}_interval" in row:
        low, high = row[f"{column}_interval"]
        return {"value": value, "low": float(low), "high": float(high)}
    return {"value": value, "low": value, "high": value}


def spoken_list(items: list) -> str:
    """'A', 'A and B', 'A, B and C'."""
    items = [str(item) for item in items]
    return " and ".join(items) if len(items) < 3 else f"{', '.join(items[:-1])} and {items[-1]}"


def best_sentence(result: dict) -> str:
    """'Diff-Pruning (T = 0.05), separated from every other row by the intervals' or '..., but the intervals do
    not separate it from A, B and C'."""
    if result["separated"]:
        return f"{result['label']}, separated from every other row by the intervals"
    return f"{result['label']}, but the intervals do not separate it from {spoken_list(result['tied_with'])}"


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
        "best_fid_separated": top["separated"],
        "best_ssim_sentence": (best_sentence(best(list(ssims["row"]), [interval(r, ssim) for _, r in ssims.iterrows()],
                                                  lower=False)) if len(ssims) else "not reported"),
        "longest_scratch_fid": float(longest[fid]), "longest_scratch_steps": f"{as_number(longest[f'{source} train steps']):,.0f}",
        "scratch_catches_up": {"lower": "overtakes", "overlapping": "is not told apart from",
                               "higher": "stays behind"}[catches_up],
        "fid_spread": float(pruned[fid].max() - pruned[fid].min()),
        "criteria_order": ranking([r.replace(" pruning", "") for r in baselines["row"]],
                                  [interval(row, fid) for _, row in baselines.iterrows()]),
    }


def table1_verdict(claims: dict) -> str:
    """The verdict on Table 1's two claims, from :func:`table1_claims` of ours: every pruned model beats scratch
    training at the same budget (in FID), and Diff-Pruning is the best criterion."""
    n, beats = claims["n_pruned"], claims["fid_beats_scratch"]
    scratch = ("agrees (every pruned model has a lower FID, beyond the intervals)" if beats == n
               else f"agrees in part ({beats} of {n} pruned models have a lower FID, beyond the intervals)" if beats
               else "cannot tell (no pruned model has a lower FID beyond the intervals)")
    leader = claims["best_fid_row"]
    if not claims["best_fid_separated"]:
        criteria = f"cannot tell (the intervals do not separate the lowest mean FID, {leader}'s, from the others)"
    elif leader.startswith("Diff-Pruning"):
        criteria = f"agrees ({leader} has the lowest FID, beyond the intervals)"
    else:
        criteria = f"disagrees ({leader}, not Diff-Pruning, has the lowest FID, beyond the intervals)"
    return f"Pruning beats scratch training: {scratch}; Diff-Pruning is the best criterion: {criteria}."


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


def best_verdict(labels: list, intervals: list, expected: str, *, measure: str, lower: bool = True) -> str:
    """The verdict on a claim that ``expected`` has the best ``measure`` (lowest with ``lower``, else highest):
    'agrees' when it is best and separated from every other label by the intervals, 'disagrees' when another
    label is better beyond the intervals, else 'cannot tell: the intervals overlap'."""
    top = best(labels, intervals, lower=lower)
    word = "lowest" if lower else "highest"
    if top["label"] == expected:
        if top["separated"]:
            return f"agrees: {expected} has the {word} {measure}, separated from every other row by the intervals"
        return (f"cannot tell: the intervals overlap ({expected} has the {word} mean {measure}, not separated from "
                f"{spoken_list(top['tied_with'])})")
    if expected in top["tied_with"]:
        return (f"cannot tell: the intervals overlap ({top['label']} has the {word} mean {measure}, not separated "
                f"from {expected})")
    return f"disagrees: {top['label']}, not {expected}, has the {word} {measure}, beyond the intervals"


def architecture_sentence(targets: list, params: list, macs: list) -> str:
    """Whether MACs targets landed on the same architecture, read from the sizes they reached (#Params and MACs
    of each target's model, equal to float rounding only for the same widths): names the targets that share
    one, or says that every target has its own."""
    sizes = {}
    for target, p, m in zip(targets, params, macs):
        sizes.setdefault((round(float(p), 6), round(float(m), 6)), []).append(target)
    shared = [group for group in sizes.values() if len(group) > 1]
    if not shared:
        return (f"Each of the {len(targets)} targets lands on an architecture of its own (no two rows have the same "
                "#Params and MACs); targets closer together than one step of the widths would share one.")
    groups = "; ".join(spoken_list(group) for group in shared)
    return f"Some targets land on the same architecture (the same #Params and MACs): {groups}."


def trend_verdict(labels: list, intervals: list, *, measure: str, worse: str = "lower") -> str:
    """The verdict on a claim that ``measure`` gets worse at every step along ``labels`` (in order; ``worse``
    'lower' for SSIM, 'higher' for FID): 'agrees' when every step is worse beyond the intervals, 'disagrees' when
    a step is better beyond them, else 'cannot tell: the intervals overlap' at the steps they do not separate."""
    if len(labels) < 2:
        return f"cannot tell: one row has no trend in {measure}"
    steps = [compare(after, before) for before, after in zip(intervals, intervals[1:])]
    better = "higher" if worse == "lower" else "lower"
    pairs = [f"{a} to {b}" for a, b in zip(labels, labels[1:])]
    if better in steps:
        return (f"disagrees: {measure} gets better from {pairs[steps.index(better)]}, beyond the intervals")
    if all(step == worse for step in steps):
        return f"agrees: {measure} gets worse at every step, beyond the intervals"
    tied = [pair for pair, step in zip(pairs, steps) if step == "overlapping"]
    return f"cannot tell: the intervals overlap from {' and from '.join(tied)}"


def threshold_verdict(table: pd.DataFrame, source: str, paper: str) -> str:
    """The verdict on Table 5's two claims, ``source``'s rows of a joined table against ``paper``'s: the full
    expansion (threshold 0) has a worse FID than the best threshold, and the best FID is at the paper's
    threshold. Labels use the paper's symbol: '𝒯 = 0.05'."""
    theirs = threshold_claims(table, paper)
    fid = next(c for c in table if c.startswith(f"{source} FID") and not c.endswith((" low", " high")))
    rows = table[table[fid].notna()]
    labels = [f"𝒯 = {t:g}" for t in rows["threshold"]]
    top = best(labels, [interval(row, fid) for _, row in rows.iterrows()])
    top_row, full_rows = rows.iloc[labels.index(top["label"])], rows[rows["threshold"] == 0]
    if not len(full_rows):
        full = "cannot tell: no row of ours at 𝒯 = 0"
    elif top_row["threshold"] == 0:
        full = ("disagrees: it has the lowest FID, beyond the intervals" if top["separated"]
                else "cannot tell: the intervals overlap")
    else:
        full = {"higher": "agrees", "overlapping": "cannot tell: the intervals overlap",
                "lower": "disagrees: it is better, beyond the intervals"}[
            compare(interval(full_rows.iloc[0], fid), interval(top_row, fid))]
    expected = f"𝒯 = {theirs['best_threshold']:g}"
    if expected not in labels:
        at = f"cannot tell: no row of ours at {expected}"
    elif not top["separated"]:
        at = f"cannot tell: the intervals overlap (lowest mean FID at {top['label']})"
    else:
        at = "agrees" if top["label"] == expected else f"disagrees: the lowest FID is at {top['label']}"
    return (f"the full expansion (𝒯 = 0) worse than the best threshold: {full}; the best FID at the paper's "
            f"{expected}: {at}")


def _x(x) -> str:
    """A position on a curve's x axis: 100, 0.5."""
    return str(int(x)) if float(x).is_integer() else f"{float(x):g}"


def _at(value: float, x, name: str, spec: str) -> str:
    """'0.592 at k = 100'."""
    return f"{value:{spec}} at {name} = {_x(x)}"


def curve_shape(x, y, *, low=None, high=None, name: str = "k", spec: str = ".3f") -> str:
    """How a curve runs, read point by point, as the verb phrase of a sentence ("The mean SSIM <phrase>."):
    'rises monotonically from 0.407 at k = 10 to 0.554 at k = 1000', or, where it turns back on the way,
    'rises from 0.339 at k = 10 to a peak of 0.635 at k = 500 and falls to 0.581 at k = 1000, not monotonically:
    it dips from 0.592 at k = 100 to 0.500 at k = 250'. Every turn against the way to or from the highest point
    is named (a dip before the peak, a rise again after it). With ``low``/``high`` (the points' intervals) each
    turn says whether the intervals separate its two ends ('beyond the intervals') or not ('within the
    intervals'). ``name``: the x variable's symbol; ``spec``: the format of the y values."""
    xs, ys = list(x), [float(v) for v in y]
    n = len(ys)
    if not n:
        return "has no points"
    at = lambda i: _at(ys[i], xs[i], name, spec)  # noqa: E731
    if n == 1:
        return f"has one point, {at(0)}"
    steps = [b - a for a, b in zip(ys, ys[1:])]
    if all(s == 0 for s in steps):
        return f"stays at {ys[0]:{spec}} from {name} = {_x(xs[0])} to {name} = {_x(xs[-1])}"
    if all(s >= 0 for s in steps):
        return f"rises monotonically from {at(0)} to {at(n - 1)}"
    if all(s <= 0 for s in steps):
        return f"falls monotonically from {at(0)} to {at(n - 1)}"
    peak = max(range(n), key=lambda i: ys[i])
    if peak == 0:
        lead = f"falls from {at(0)}, its highest value, to {at(n - 1)}"
    elif peak == n - 1:
        lead = f"rises from {at(0)} to its highest value, {at(n - 1)}"
    else:
        lead = f"rises from {at(0)} to a peak of {at(peak)} and falls to {at(n - 1)}"
    turns, i = [], 0  # runs of steps against the way: down before the peak, up after it
    while i < n - 1:
        against = (lambda s: s < 0) if i < peak else (lambda s: s > 0)
        if not against(steps[i]):
            i += 1
            continue
        j = i
        while j < n - 1 and (j < peak) == (i < peak) and against(steps[j]):
            j += 1
        turns.append((i, j))
        i = j
    phrases = []
    for i, j in turns:
        phrase = f"{'dips' if i < peak else 'rises again'} from {at(i)} to {at(j)}"
        if low is not None and high is not None:
            a = {"value": ys[i], "low": float(list(low)[i]), "high": float(list(high)[i])}
            b = {"value": ys[j], "low": float(list(low)[j]), "high": float(list(high)[j])}
            phrase += " (beyond the intervals)" if compare(a, b) != "overlapping" else " (within the intervals)"
        phrases.append(phrase)
    return f"{lead}, not monotonically: it {', and '.join(phrases)}"


def timestep_verdict(curve: pd.DataFrame) -> str:
    """The verdict on the paper's CIFAR-10 reading of Figure 5 (SSIM peaks at a few hundred timesteps, more
    timesteps hurt) for a curve with 'timesteps', 'ssim', 'ssim low', 'ssim high': 'agrees' where SSIM rises to
    a peak and falls after it, both beyond the intervals; 'disagrees' where all timesteps give the best SSIM,
    separated from every other k (more timesteps keep helping); else 'cannot tell: the intervals overlap'."""
    points = [interval(curve.iloc[i], "ssim") for i in range(len(curve))]
    peak = max(range(len(points)), key=lambda i: points[i]["value"])
    if compare(points[peak], points[0]) != "higher":
        return "cannot tell: the intervals overlap"
    if peak < len(points) - 1 and compare(points[peak], points[-1]) == "higher":
        return "agrees"
    if peak == len(points) - 1 and all(compare(points[-1], p) == "higher" for p in points[:-1]):
        return "disagrees"
    return "cannot tell: the intervals overlap"


def impact_verdict(t, gain) -> str:
    """The verdict on "errors at larger t have a larger impact on the images" (Section 4): 'agrees' if the measured
    gain from an error to the image is larger at the largest t than at the smallest, else 'disagrees'. The gains
    are single measurements (no interval): every difference counts."""
    pairs = sorted(zip(t, gain))
    if len(pairs) < 2:
        return "cannot tell: one step only"
    return "agrees" if pairs[-1][1] > pairs[0][1] else "disagrees"


def threshold_count_verdict(thresholds, ours, paper, *, total: int, tolerance: float = 0.1) -> str:
    """The verdict on Table 5's counts: the shape (every positive threshold stops before the last of ``total``
    timesteps, as a loss that "rapidly approaches 0" makes it) and the counts (ours within ``tolerance`` of the
    paper's, relatively). 'agrees', 'disagrees', or 'agrees on the shape, disagrees on the counts' (or the reverse).
    Thresholds without a paper count (NaN) are left out."""
    rows = [(float(t), float(o), float(p)) for t, o, p in zip(thresholds, ours, paper) if t > 0 and not math.isnan(p)]
    if not rows:
        return "cannot tell: no positive threshold of Table 5 to compare"
    shape = all(o < total for _, o, _ in rows)
    counts = all(abs(o / p - 1) <= tolerance for _, o, p in rows)
    if shape == counts:
        return "agrees" if shape else "disagrees"
    return ("agrees on the shape, disagrees on the counts" if shape
            else "disagrees on the shape, agrees on the counts")


def counts_verdict(labels: list, params_off: list, macs_off: list, *, tolerance: float) -> str:
    """The verdict on recomputing the paper's pruned #Params and MACs from the shapes: ``params_off`` and
    ``macs_off`` are each U-Net's relative differences (ours / paper's - 1; NaN where it was not counted), and a
    U-Net agrees when both lie within ``tolerance`` (a fraction: 0.01 is 1%). 'agrees' when every counted U-Net
    does, 'agrees in part' naming those that do not, 'disagrees' when none does."""
    counted = [(label, p, m) for label, p, m in zip(labels, params_off, macs_off) if not (math.isnan(p) or math.isnan(m))]
    if not counted:
        return "cannot tell: no U-Net was counted"
    within = [label for label, p, m in counted if abs(p) <= tolerance and abs(m) <= tolerance]
    beyond = [f"{label} ({p:+.1%} #Params, {m:+.1%} MACs)" for label, p, m in counted if label not in within]
    limit = f"{tolerance:.1%}".replace(".0%", "%")
    if not beyond:
        return f"agrees: {spoken_list(within)} within {limit} of the paper's pruned #Params and MACs"
    if not within:
        return f"disagrees: no U-Net within {limit} of the paper's pruned counts; {spoken_list(beyond)} off"
    return (f"agrees in part: {spoken_list(within)} within {limit} of the paper's pruned #Params and MACs; "
            f"{spoken_list(beyond)} off by more")


def macs_sentence(dp_macs: float, ld_macs: float, dense_macs: float, *, tolerance: float = 0.05) -> str:
    """How chapter 9's two pruned models compare in MACs: 'at equal MACs' only when LD-Pruner's MACs lie within
    ``tolerance`` (relative: 0.05 is 5%) of Diff-Pruning's, else what each removes. The sentence completes
    'LD-Pruner is compared with Diff-Pruning ...'."""
    off = ld_macs / dp_macs - 1
    limit = f"{tolerance:.1%}".replace(".0%", "%")
    removed = (f"Diff-Pruning removes {1 - dp_macs / dense_macs:.1%} of the teacher's MACs, LD-Pruner "
               f"{1 - ld_macs / dense_macs:.1%}")
    if abs(off) <= tolerance:
        return f"at equal MACs, within {limit}: {removed}"
    return (f"at unequal MACs: {removed}, so LD-Pruner's model has {abs(off):.1%} {'fewer' if off < 0 else 'more'} "
            f"MACs than Diff-Pruning's, beyond the {limit} taken as equal")


def preserved_weights_verdict(measures: dict, *, lower: tuple = ("FID",)) -> str:
    """The verdict on "fine-tuning from the preserved weights beats training the same pruned architecture from
    scratch" (LD-Pruner's Table 3): ``measures`` maps a measure to (preserved, scratch) intervals; higher is better
    except for the measures in ``lower`` (FID). 'agrees' when every measure is better with the preserved weights
    beyond the intervals, 'disagrees' when one is worse beyond them, else 'cannot tell: the intervals overlap'
    (naming the measures that overlap, and those that agree)."""
    if not measures:
        return "cannot tell: no measure"
    outcome = {name: compare(*((scratch, preserved) if name in lower else (preserved, scratch)))
               for name, (preserved, scratch) in measures.items()}  # 'higher': better with the preserved weights
    better = [name for name, o in outcome.items() if o == "higher"]
    worse = [name for name, o in outcome.items() if o == "lower"]
    overlapping = [name for name, o in outcome.items() if o == "overlapping"]
    if worse:
        return f"disagrees: {spoken_list(worse)} worse with the preserved weights than from scratch, beyond the intervals"
    if not overlapping:
        return f"agrees: {spoken_list(better)} better with the preserved weights than from scratch, beyond the intervals"
    return (f"cannot tell: the intervals overlap for {spoken_list(overlapping)}"
            + (f" ({spoken_list(better)} better with the preserved weights)" if better else ""))
