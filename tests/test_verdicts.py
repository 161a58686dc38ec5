"""The chapters' verdict sentences: computed from intervals, silent where the intervals overlap."""
import math

import pandas as pd

from diffprune_core.verdicts import (interval, orders_agree, rounding_reading, speedup_reading, table1_claims,
                                     threshold_claims, timestep_reading)


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
    paper = table1_claims(table1(FIDS, 0.5), "paper")  # exact numbers: every difference counts
    assert paper["criteria_order"] == "Taylor < Magnitude < Random" and paper["fid_beats_scratch"] == 4


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
