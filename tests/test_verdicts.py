"""The chapters' verdict sentences: computed from intervals, silent where the intervals overlap."""
import math

import pandas as pd

from diffprune_core.verdicts import (interval, orders_agree, rounding_reading, speedup_reading, table1_claims,
                                     table1_verdict, threshold_claims, timestep_reading)


def table1(fids: dict, half: float) -> pd.DataFrame:
    """A joined Table 1 with our FIDs (intervals of half-width ``half``) and a paper's exact numbers."""
    rows = [("pretrained", "Pretrained", 1000), ("scratch", "Scratch training", 300),
            ("scratch", "Scratch training (2)", 1500), ("random", "Random pruning", 300),
            ("magnitude", "Magnitude pruning", 300), ("taylor", "Taylor pruning", 300),
            ("diff-pruning", "Diff-Pruning (T = 0.05)", 300)]
    frame = pd.DataFrame({"method": [r[0] for r in rows], "row": [r[1] for r in rows],
                          "ours train steps": [r[2] for r in rows], "paper train steps": ["800K", "100K", "800K"] + ["100K"] * 4})
    frame["ours FID (digits features)"] = [fids[r[1]] for r in rows]
    frame["ours FID (digits features) low"] = frame["ours FID (digits features)"] - half
    frame["ours FID (digits features) high"] = frame["ours FID (digits features)"] + half
    frame["ours SSIM"] = [1.0, 0.5, 0.8, 0.8, 0.82, 0.84, 0.86]
    frame["paper FID (Inception-v3)"] = [4.2, 9.9, 5.0, 5.6, 5.5, 5.4, 5.3]
    frame["paper SSIM"] = [1.0, 0.6, math.nan, 0.9, 0.91, 0.92, 0.93]
    return frame


FIDS = {"Pretrained": 5.0, "Scratch training": 60.0, "Scratch training (2)": 20.0, "Random pruning": 20.0,
        "Magnitude pruning": 12.0, "Taylor pruning": 10.0, "Diff-Pruning (T = 0.05)": 9.0}


def test_table1_claims_speak_only_where_the_intervals_separate():
    narrow = table1_claims(table1(FIDS, 0.4), "ours")
    assert narrow["fid_beats_scratch"] == 4 and narrow["fid_ties_scratch"] == 0
    assert narrow["best_fid_row"] == "Diff-Pruning (T = 0.05)"
    assert narrow["best_fid_sentence"].endswith("separated from every other row by the intervals")
    assert narrow["criteria_order"] == "Taylor < Magnitude < Random"
    assert narrow["scratch_catches_up"] == "stays behind"
    wide = table1_claims(table1(FIDS, 1.5), "ours")
    assert wide["best_fid_sentence"].endswith("do not separate it from Taylor pruning and Magnitude pruning")
    assert wide["criteria_order"] == "Taylor ~ Magnitude < Random"
    wider = table1_claims(table1(FIDS, 6.0), "ours")
    assert wider["best_fid_sentence"].endswith("do not separate it from Taylor pruning, Magnitude pruning and "
                                               "Random pruning")
    paper = table1_claims(table1(FIDS, 0.5), "paper")  # exact numbers: every difference counts
    assert paper["criteria_order"] == "Taylor < Magnitude < Random" and paper["fid_beats_scratch"] == 4


def test_table1_verdict_agrees_disagrees_or_cannot_tell():
    assert table1_verdict(table1_claims(table1(FIDS, 0.4), "ours")) == (
        "Pruning beats scratch training: agrees (every pruned model has a lower FID, beyond the intervals); "
        "Diff-Pruning is the best criterion: agrees (Diff-Pruning (T = 0.05) has the lowest FID, beyond the intervals).")
    wide = table1_verdict(table1_claims(table1(FIDS, 1.5), "ours"))
    assert "best criterion: cannot tell (the intervals do not separate the lowest mean FID, Diff-Pruning" in wide
    taylor_best = table1_verdict(table1_claims(table1(FIDS | {"Taylor pruning": 7.0}, 0.4), "ours"))
    assert "best criterion: disagrees (Taylor pruning, not Diff-Pruning, has the lowest FID" in taylor_best
    one_loses = table1_verdict(table1_claims(table1(FIDS | {"Random pruning": 59.9}, 0.4), "ours"))
    assert "scratch training: agrees in part (3 of 4 pruned models" in one_loses


def test_interval_reads_each_way_a_row_carries_its_bounds():
    assert interval(pd.Series({"FID": 3.0, "FID low": 2.0, "FID high": 4.0}), "FID") == {"value": 3.0, "low": 2.0, "high": 4.0}
    assert interval(pd.Series({"ssim": 0.8, "ssim_low": 0.7, "ssim_high": 0.9}), "ssim")["low"] == 0.7
    assert interval({"ssim": 0.8, "ssim_interval": (0.75, 0.85)}, "ssim")["high"] == 0.85  # a run's metrics
    assert interval(pd.Series({"FID": 5.49}), "FID") == {"value": 5.49, "low": 5.49, "high": 5.49}  # the paper's


def test_orders_agree_unless_a_separated_pair_is_reversed():
    assert orders_agree("a ~ b < c", "b < a < c")
    assert not orders_agree("a < b ~ c", "b < a < c")


def test_threshold_claims_and_the_full_expansion():
    table = pd.DataFrame({"threshold": [0.0, 0.02, 0.05], "ours FID (digits features)": [10.0, 9.0, 9.5],
                          "ours FID (digits features) low": [9.8, 8.0, 8.5],
                          "ours FID (digits features) high": [10.2, 10.0, 10.5], "ours timesteps used": [1000, 600, 400]})
    claims = threshold_claims(table, "ours")
    assert claims["best_threshold"] == 0.02 and claims["best_timesteps"] == 600
    assert claims["best_sentence"].endswith("not separate it from T = 0.05 and T = 0")
    assert claims["full_versus_best"] == "the full expansion is not told apart from it by the intervals"
    table["ours FID (digits features) low"] = table["ours FID (digits features)"] - 0.1
    table["ours FID (digits features) high"] = table["ours FID (digits features)"] + 0.1
    assert threshold_claims(table, "ours")["full_versus_best"] == "the full expansion is worse, beyond the intervals"


def test_timestep_reading_follows_the_intervals():
    def curve(values, half):
        return pd.DataFrame({"timesteps": [10, 100, 1000], "ssim": values, "ssim low": [v - half for v in values],
                             "ssim high": [v + half for v in values]})
    assert "hurt" in timestep_reading(curve([0.5, 0.8, 0.6], 0.05))
    assert "neither hurt" in timestep_reading(curve([0.5, 0.8, 0.78], 0.05))
    assert "does not rise" in timestep_reading(curve([0.5, 0.52, 0.51], 0.05))
    assert interval(pd.Series({"x": 1.0}), "x") == {"value": 1.0, "low": 1.0, "high": 1.0}


def test_speed_readings_come_from_the_ranges():
    row = {"macs_ratio": 0.56, "time_ratio": 0.6, "time_ratio_low": 0.58, "time_ratio_high": 0.62}
    assert speedup_reading(row) == "faster, but less than the MACs predict"
    assert speedup_reading({**row, "time_ratio_low": 0.5}) == "faster, as far as the MACs predict"
    assert speedup_reading({**row, "time_ratio_low": 0.9, "time_ratio_high": 1.1}) == \
        "not told apart from the dense U-Net's time"
    assert speedup_reading({**row, "time_ratio_low": 0.4, "time_ratio_high": 0.5}) == "faster than even the MACs predict"
    rounded = {**row, "time_ratio": 0.5, "time_ratio_low": 0.49, "time_ratio_high": 0.51}
    assert rounding_reading(row, rounded) == "faster with rounded widths"
    assert rounding_reading(row, {**rounded, "time_ratio_high": 0.59}) == "not told apart by the ranges"


from diffprune_core.verdicts import curve_shape, impact_verdict, threshold_count_verdict, timestep_verdict  # noqa: E402


def test_curve_shape_names_every_turn():
    k = [10, 25, 50, 100, 250, 500, 1000]
    assert curve_shape(k, [0.3, 0.4, 0.5, 0.5, 0.6, 0.7, 0.8]) == "rises monotonically from 0.300 at k = 10 to 0.800 at k = 1000"
    assert curve_shape([1, 2], [0.5, 0.4], name="t").startswith("falls monotonically from 0.500 at t = 1")
    # issue 14: "rises to a peak at k = 500" passed over the dip from 0.592 to 0.50
    shape = curve_shape(k, [0.34, 0.46, 0.578, 0.592, 0.50, 0.635, 0.581])
    assert shape.startswith("rises from 0.340 at k = 10 to a peak of 0.635 at k = 500 and falls to 0.581 at k = 1000")
    assert "not monotonically: it dips from 0.592 at k = 100 to 0.500 at k = 250" in shape
    assert "monotonically from" not in shape
    shape = curve_shape(k, [0.4, 0.5, 0.45, 0.6, 0.55, 0.58, 0.7])
    assert shape.startswith("rises from 0.400 at k = 10 to its highest value, 0.700 at k = 1000")
    assert shape.endswith("dips from 0.500 at k = 25 to 0.450 at k = 50, and dips from 0.600 at k = 100 to 0.550 at k = 250")
    after = curve_shape([1, 2, 3, 4], [0.9, 0.5, 0.6, 0.4])
    assert after.startswith("falls from 0.900 at k = 1, its highest value") and "rises again from 0.500 at k = 2 to 0.600" in after
    values = [0.4, 0.6, 0.5, 0.7]
    wide = curve_shape([1, 2, 3, 4], values, low=[v - 0.2 for v in values], high=[v + 0.2 for v in values])
    narrow = curve_shape([1, 2, 3, 4], values, low=[v - 0.01 for v in values], high=[v + 0.01 for v in values])
    assert wide.endswith("(within the intervals)") and narrow.endswith("(beyond the intervals)")
    assert curve_shape([5], [0.5]) == "has one point, 0.500 at k = 5"


def test_timestep_verdict_speaks_only_beyond_the_intervals():
    def curve(values, half):
        return pd.DataFrame({"timesteps": [10, 100, 1000], "ssim": values, "ssim low": [v - half for v in values],
                             "ssim high": [v + half for v in values]})
    assert timestep_verdict(curve([0.5, 0.8, 0.6], 0.05)) == "agrees"
    assert timestep_verdict(curve([0.5, 0.6, 0.8], 0.02)) == "disagrees"
    assert timestep_verdict(curve([0.5, 0.78, 0.8], 0.05)) == "cannot tell: the intervals overlap"
    assert timestep_verdict(curve([0.5, 0.52, 0.51], 0.05)) == "cannot tell: the intervals overlap"


def test_impact_and_threshold_count_verdicts():
    assert impact_verdict([10, 1000, 100], [0.002, 0.0001, 0.0015]) == "disagrees"
    assert impact_verdict([10, 1000], [0.002, 3.1]) == "agrees"
    assert threshold_count_verdict([0, 0.01, 0.05], [1000, 653, 485], [1000, 707, 244], total=1000) == \
        "agrees on the shape, disagrees on the counts"
    assert threshold_count_verdict([0.01, 0.05], [700, 250], [707, 244], total=1000) == "agrees"
    assert threshold_count_verdict([0.05], [1000], [244], total=1000) == "disagrees"
    assert threshold_count_verdict([0.05], [300], [math.nan], total=1000).startswith("cannot tell")


def test_best_verdict_agrees_disagrees_or_cannot_tell():
    from diffprune_core.verdicts import best_verdict
    exact = lambda v: {"value": v, "low": v - 0.01, "high": v + 0.01}  # noqa: E731
    labels = ["Random", "Diff-Pruning"]
    assert best_verdict(labels, [exact(0.5), exact(0.8)], "Diff-Pruning", measure="SSIM", lower=False).startswith(
        "agrees")
    assert best_verdict(labels, [exact(0.8), exact(0.5)], "Diff-Pruning", measure="SSIM", lower=False).startswith(
        "disagrees: Random, not Diff-Pruning")
    wide = {"value": 0.79, "low": 0.5, "high": 0.9}
    assert best_verdict(labels, [exact(0.8), wide], "Diff-Pruning", measure="SSIM", lower=False).startswith(
        "cannot tell: the intervals overlap")
    assert best_verdict(labels, [wide, exact(0.8)], "Diff-Pruning", measure="SSIM", lower=False).startswith(
        "cannot tell: the intervals overlap")


def test_architecture_sentence_reads_the_sizes():
    from diffprune_core.verdicts import architecture_sentence
    distinct = architecture_sentence(["16%", "44%"], [0.43, 0.31], [19.7, 13.1])
    assert distinct.startswith("Each of the 2 targets lands on an architecture of its own")
    shared = architecture_sentence(["16%", "20%", "44%"], [0.43, 0.43, 0.31], [19.7, 19.7, 13.1])
    assert shared == "Some targets land on the same architecture (the same #Params and MACs): 16% and 20%."


def test_trend_verdict_needs_every_step_beyond_the_intervals():
    from diffprune_core.verdicts import trend_verdict
    point = lambda v, h=0.01: {"value": v, "low": v - h, "high": v + h}  # noqa: E731
    labels = ["0%", "16%", "44%"]
    assert trend_verdict(labels, [point(1, 0), point(0.9), point(0.8)], measure="SSIM").startswith("agrees")
    assert trend_verdict(labels, [point(1, 0), point(0.8), point(0.9)], measure="SSIM") == (
        "disagrees: SSIM gets better from 16% to 44%, beyond the intervals")
    assert trend_verdict(labels, [point(1, 0), point(0.9, 0.08), point(0.85)], measure="SSIM") == (
        "cannot tell: the intervals overlap from 16% to 44%")
    assert trend_verdict(labels, [point(5), point(6), point(7)], measure="FID", worse="higher").startswith("agrees")
    assert trend_verdict(["0%"], [point(1)], measure="SSIM").startswith("cannot tell")


def test_threshold_verdict_on_both_claims():
    from diffprune_core.verdicts import threshold_verdict

    def table(fids, half):
        return pd.DataFrame({"threshold": [0.0, 0.05, 0.1], "ours FID (digits features)": fids,
                             "ours FID (digits features) low": [f - half for f in fids],
                             "ours FID (digits features) high": [f + half for f in fids],
                             "ours timesteps used": [1000, 400, 200], "CIFAR-10 FID (Inception-v3)": [5.49, 5.29, 5.31],
                             "CIFAR-10 timesteps used": [1000, 244, 127]})

    assert threshold_verdict(table([30, 20, 25], 1), "ours", "CIFAR-10") == (
        "the full expansion (𝒯 = 0) worse than the best threshold: agrees; the best FID at the paper's 𝒯 = 0.05: agrees")
    overlapping = threshold_verdict(table([30, 20, 25], 10), "ours", "CIFAR-10")
    assert "worse than the best threshold: cannot tell: the intervals overlap" in overlapping
    assert overlapping.endswith("cannot tell: the intervals overlap (lowest mean FID at 𝒯 = 0.05)")
    assert threshold_verdict(table([10, 20, 25], 1), "ours", "CIFAR-10") == (
        "the full expansion (𝒯 = 0) worse than the best threshold: disagrees: it has the lowest FID, beyond the "
        "intervals; the best FID at the paper's 𝒯 = 0.05: disagrees: the lowest FID is at 𝒯 = 0")


def test_counts_verdict_within_a_tolerance():
    from diffprune_core.verdicts import counts_verdict
    labels = ["CIFAR-10", "LSUN", "ImageNet LDM"]
    assert counts_verdict(labels, [0.002, 0.0001, 0.012], [-0.002, 0.0005, -0.012], tolerance=0.01) == (
        "agrees in part: CIFAR-10 and LSUN within 1% of the paper's pruned #Params and MACs; "
        "ImageNet LDM (+1.2% #Params, -1.2% MACs) off by more")
    assert counts_verdict(labels, [0.002, math.nan, math.nan], [0.001, math.nan, math.nan], tolerance=0.01) == (
        "agrees: CIFAR-10 within 1% of the paper's pruned #Params and MACs")
    assert counts_verdict(labels[:1], [0.05], [0.0], tolerance=0.01).startswith("disagrees: no U-Net")
    assert counts_verdict(labels[:1], [math.nan], [math.nan], tolerance=0.01) == "cannot tell: no U-Net was counted"


def test_macs_sentence_says_equal_only_within_the_tolerance():
    from diffprune_core.verdicts import macs_sentence
    unequal = macs_sentence(13.07e6, 10.83e6, 23.45e6)
    assert unequal.startswith("at unequal MACs: Diff-Pruning removes 44.3% of the teacher's MACs, LD-Pruner 53.8%")
    assert "17.1% fewer MACs than Diff-Pruning's, beyond the 5% taken as equal" in unequal
    assert macs_sentence(20.49e6, 20.0e6, 37.76e6).startswith("at equal MACs, within 5%: ")
    assert macs_sentence(20.49e6, 20.0e6, 37.76e6, tolerance=0.01).startswith("at unequal MACs")
    assert "more MACs" in macs_sentence(10e6, 12e6, 20e6)


def test_preserved_weights_verdict_reads_the_intervals():
    from diffprune_core.verdicts import preserved_weights_verdict
    point = lambda v, h=0.01: {"value": v, "low": v - h, "high": v + h}  # noqa: E731
    assert preserved_weights_verdict({"SSIM": (point(0.85), point(0.63)), "class accuracy": (point(0.77), point(0.58))}) == (
        "agrees: SSIM and class accuracy better with the preserved weights than from scratch, beyond the intervals")
    assert preserved_weights_verdict({"SSIM": (point(0.5), point(0.63))}).startswith("disagrees: SSIM worse")
    assert preserved_weights_verdict({"SSIM": (point(0.85), point(0.63)), "class accuracy": (point(0.6, 0.1), point(0.58))}) == (
        "cannot tell: the intervals overlap for class accuracy (SSIM better with the preserved weights)")
    # FID: lower is better, so a lower FID with the preserved weights agrees and a higher one disagrees
    assert preserved_weights_verdict({"FID": (point(20, 2), point(40, 2))}).startswith("agrees: FID better")
    assert preserved_weights_verdict({"FID": (point(40, 2), point(20, 2))}).startswith("disagrees: FID worse")
    assert preserved_weights_verdict({}).startswith("cannot tell")
