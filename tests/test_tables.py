"""The book's tables as a reader sees them: precision, units, one percent style, intervals, '–'."""
import math

import pandas as pd
import pytest

from diffprune_core import tables
from diffprune_core.errors import InputError


def test_each_kind_of_number_has_one_style():
    frame = pd.DataFrame({"row": ["Pretrained", "Diff-Pruning (T = 0.05)", "LSUN"], "fid": [198.26, 7.964, 1.0],
                          "ssim": [1.0, 0.85612, 1.0], "kept": [1.0, 0.5381, 1.0], "off": [-0.5641, 0.012, -0.0004],
                          "params": [35_716_000, 23_448_560, 1], "macs": [6.1e9, 52_300.0, 1], "steps": [300, 1500, 0]})
    shown = tables.cells(frame, {"row": ("Row", "text"), "fid": ("FID", "fid"), "ssim": ("SSIM", "ssim"),
                                 "kept": ("Params kept", "share"), "off": ("Change", "change"),
                                 "params": ("#Params", "count"), "macs": ("MACs", "count"),
                                 "steps": ("Fine-tuning steps", "integer")})
    assert shown.columns.tolist() == ["Row", "FID", "SSIM", "Params kept", "Change", "#Params", "MACs",
                                      "Fine-tuning steps"]
    assert shown.iloc[0].tolist() == ["Pretrained", "198", "1.000", "100.0%", "-56.4%", "35.7 M", "6.1 G", "300"]
    assert shown.iloc[1].tolist() == ["Diff-Pruning (T = 0.05)", "7.96", "0.856", "53.8%", "+1.2%", "23.4 M",
                                      "52.3 k", "1,500"]
    assert shown.iloc[2]["Change"] == "+0.0%", "a change that rounds to zero has no minus sign"


def test_intervals_take_the_means_precision_and_missing_values_a_dash():
    frame = pd.DataFrame({"FID": [26.24, 198.26, math.nan, 31.0], "FID low": [10.46, 114.22, math.nan, math.nan],
                          "FID high": [42.01, 282.3, math.nan, math.nan],
                          "ssim": [0.856, 0.4, 0.7, None], "ssim_low": [0.8231, 0.35, math.nan, math.nan],
                          "ssim_high": [0.8889, 0.45, math.nan, math.nan]})
    shown = tables.cells(frame, {"FID": ("FID", "fid"), "ssim": ("SSIM", "ssim")})
    assert shown["FID"].tolist() == ["26.2 [10.5, 42.0]", "198 [114, 282]", "–", "31.0"]
    assert shown["SSIM"].tolist() == ["0.856 [0.823, 0.889]", "0.400 [0.350, 0.450]", "0.700", "–"]


def test_other_measures_take_three_significant_digits_and_times_their_unit():
    frame = pd.DataFrame({"gain": [0.0000409, 3.1512], "wall": [92.17, 0.5], "fit": [7.2, 12.0]})
    shown = tables.cells(frame, {"gain": ("Gain", "significant"), "wall": ("Wall time", "minutes"),
                                 "fit": ("Training", "seconds")})
    assert shown.values.tolist() == [["0.0000409", "92.2 min", "7.2 s"], ["3.15", "0.5 min", "12.0 s"]]


def test_markdown_aligns_numbers_right_and_escapes_pipes():
    frame = pd.DataFrame({"name": ["a|b"], "share": [0.25]})
    text = tables.markdown(frame, {"name": ("Name", "text"), "share": ("Share", "share")}).data
    assert text.splitlines() == ["| Name | Share |", "| :--- | ---: |", "| a\\|b | 25.0% |"]


def test_unknown_columns_and_formats_are_refused():
    frame = pd.DataFrame({"fid": [1.0]})
    with pytest.raises(InputError, match="no column"):
        tables.cells(frame, {"FID": ("FID", "fid")})
    with pytest.raises(InputError, match="unknown format"):
        tables.cells(frame, {"fid": ("FID", "percent")})


def test_one_rows_value_with_its_interval():
    row = pd.Series({"ours SSIM": 0.85612, "ours SSIM low": 0.8231, "ours SSIM high": 0.8889, "fid": 26.24})
    assert tables.of_row(row, "ours SSIM", "ssim") == "0.856 [0.823, 0.889]"
    assert tables.of_row(row, "fid", "fid") == "26.2"
    run = {"fid": 26.24, "fid_interval": [21.4, 31.07]}  # a run's metrics (experiments.measure)
    assert tables.of_row(run, "fid", "fid") == "26.2 [21.4, 31.1]"


def test_bounds_from_the_runs_interval_pairs():
    runs = pd.DataFrame({"fid": [20.0, 30.0], "fid_interval": [[18.0, 22.0], None], "ssim": [0.5, 0.6]})
    bounded = tables.with_bounds(runs, ["fid", "ssim"])
    assert bounded["fid_low"].tolist()[0] == 18.0 and bounded["fid_high"].tolist()[0] == 22.0
    assert bounded[["fid_low", "ssim_low", "ssim_high"]].iloc[1].isna().all(), "no interval: NaN, shown without one"
    assert tables.cells(bounded, {"fid": ("FID", "fid")})["FID"].tolist() == ["20.0 [18.0, 22.0]", "30.0"]
