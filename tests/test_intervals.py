"""95% intervals over samples and the verdicts drawn from them."""
import pytest
import torch
from scipy import stats

from diffprune_core.errors import InputError
import pandas as pd

from diffprune_core.intervals import (best, compare, formatted, mean_interval, of_row, over_seeds,
                                    proportion_interval, ranking)


def test_mean_interval_is_students_t_interval():
    values = torch.tensor([0.80, 0.85, 0.90, 0.82, 0.88])
    interval = mean_interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.double().mean().item(),
                                 scale=stats.sem(values.double().numpy()))
    assert interval["value"] == pytest.approx(0.85)
    assert (interval["low"], interval["high"]) == (pytest.approx(low), pytest.approx(high))
    with pytest.raises(InputError, match="at least 2"):
        mean_interval([0.5])


def test_proportion_interval_is_wilsons():
    # Wilson's interval of 0 successes in 10 at 95%: [0, 0.2775]; of 5 in 10: [0.2366, 0.7634]
    none = proportion_interval(0, 10)
    assert none["value"] == 0 and none["low"] == pytest.approx(0, abs=1e-12)
    assert none["high"] == pytest.approx(0.2775, abs=1e-4)
    half = proportion_interval(5, 10)
    assert (half["low"], half["high"]) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    with pytest.raises(InputError):
        proportion_interval(11, 10)


def test_compare_speaks_only_without_overlap():
    a, b = {"value": 0.9, "low": 0.85, "high": 0.95}, {"value": 0.7, "low": 0.6, "high": 0.8}
    assert compare(a, b) == "higher" and compare(b, a) == "lower"
    assert compare(a, {"value": 0.84, "low": 0.8, "high": 0.86}) == "overlapping"
    assert formatted(a) == "0.900 [0.850, 0.950]"


def test_over_seeds_gives_the_t_interval_of_each_rows_mean():
    runs = pd.DataFrame({"row": [0, 0, 0, 1, 1, 1, 2], "method": ["a"] * 3 + ["b"] * 3 + ["c"],
                         "fid": [10.0, 12.0, 11.0, 20.0, 26.0, 23.0, 5.0], "seed": [0, 1, 2, 0, 1, 2, 0]})
    summary = over_seeds(runs, ["fid"])
    assert list(summary["method"]) == ["a", "b", "c"] and list(summary["seeds"]) == [3, 3, 1]
    half = stats.t.ppf(0.975, 2) * 3.0 / 3 ** 0.5  # row b: mean 23, std 3
    assert summary.loc[1, "fid"] == pytest.approx(23.0) and summary.loc[1, "fid_std"] == pytest.approx(3.0)
    assert (summary.loc[1, "fid_low"], summary.loc[1, "fid_high"]) == (pytest.approx(23 - half), pytest.approx(23 + half))
    assert summary.loc[2, "fid"] == 5.0 and pd.isna(summary.loc[2, "fid_low"])
    one_seed = of_row(summary.loc[2], "fid")
    assert compare(one_seed, of_row(summary.loc[0], "fid")) == "overlapping", "one seed tells nothing apart"


def test_best_and_ranking_speak_only_where_intervals_separate():
    a = {"value": 1.0, "low": 0.5, "high": 1.5}
    b = {"value": 1.2, "low": 0.9, "high": 1.6}
    c = {"value": 3.0, "low": 2.5, "high": 3.5}
    assert best(["a", "b", "c"], [c, a, b]) == {"label": "b", "tied_with": ["c"], "separated": False}
    assert best(["a", "c"], [a, c]) == {"label": "a", "tied_with": [], "separated": True}
    assert best(["a", "c"], [a, c], lower=False)["label"] == "c"
    assert ranking(["c", "a", "b"], [c, a, b]) == "a ~ b < c"
    assert ranking(["c", "a", "b"], [c, a, b], lower=False) == "c > b ~ a"
