"""The book's shared tables and plots: our rows beside the paper's, the teacher's loss curve, pruned widths."""
import matplotlib
import pandas as pd
import pytest
import torch

from diffprune_core import figures, paper
from diffprune_core.experiments import RunSpec, run
from diffprune_core.thresholds import timesteps_kept

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def metrics_table(rows):
    """A stand-in for experiments.table: (method, threshold, train_steps, params, fid) per row."""
    frame = pd.DataFrame(rows, columns=["method", "threshold", "train_steps", "params", "fid"])
    return frame.assign(macs=frame["params"] * 10, ssim=0.9, timesteps_used=0)


def test_our_rows_beside_table_1_match_method_threshold_and_scratch_order():
    ours = figures.our_rows(metrics_table([
        ("teacher", None, 0, 100, 1.0), ("scratch", None, 600, 50, 9.0), ("scratch", None, 3000, 50, 5.0),
        ("magnitude", None, 600, 50, 3.0), ("diff-pruning", 0.05, 600, 50, 2.0), ("diff-pruning", 0.3, 600, 50, 4.0),
    ]), dense=pd.Series({"params": 100, "macs": 1000}))
    assert ours["row"].tolist()[:2] == ["Pretrained", "Scratch training"]
    assert ours["row"].tolist()[4] == "Diff-Pruning (T = 0.05)" and ours["params kept"].tolist()[1] == 0.5
    rows = paper.paper_rows(source="diff-pruning", table=1, dataset="cifar10-32")
    cifar = figures.paper_rows_table(rows, dense=rows.iloc[0])
    table = figures.beside_paper(ours, {"CIFAR-10": cifar}, on=["method", "threshold"])
    assert table["CIFAR-10 train steps"].tolist()[:3] == ["800K", "100K", "500K"], "scratch rows pair in order"
    assert table["row"].tolist()[:3] == ["Pretrained", "Scratch training (1)", "Scratch training (2)"]
    assert table["CIFAR-10 FID (Inception-v3)"].tolist()[3:5] == [5.48, 5.29]
    assert pd.isna(table["CIFAR-10 FID (Inception-v3)"].iloc[5]), "no paper row at T = 0.3"
    assert table["ours FID (digits features)"].tolist() == [1.0, 9.0, 5.0, 3.0, 2.0, 4.0]
    assert table["CIFAR-10 params kept"].iloc[4] == pytest.approx(19.8 / 35.7)


def test_several_of_our_rows_can_share_a_paper_row():
    ours = pd.DataFrame({"row": ["70%", "75%"], "paper row": [0.7, 0.7], "FID": [9.0, 10.0]})
    paper = pd.DataFrame({"row": ["56%", "70%"], "paper row": [0.56, 0.7], "FID": [6.36, 9.33]})
    table = figures.beside_paper(ours, {"paper": paper}, on=["paper row"], in_order=False)
    assert table["row"].tolist() == ["70%", "75%"] and table["paper FID"].tolist() == [9.33, 9.33]
    assert table["ours FID"].tolist() == [9.0, 10.0]


def test_plot_beside_paper_draws_one_panel_per_metric_and_source():
    table = pd.DataFrame({"row": ["a", "b"], "x": [0.1, 0.2], "ours FID (digits features)": [1.0, 2.0],
                          "ours SSIM": [0.9, 0.8], "paper x": [0.15, 0.3], "paper FID (Inception-v3)": [5.0, 6.0],
                          "paper SSIM": [None, None]})
    sources = {"ours": "ours", "paper": "CIFAR-10"}
    metrics = [("FID (digits features)", "FID (Inception-v3)"), ("SSIM",)]
    bars = figures.plot_beside_paper(table, sources=sources, x="row", metrics=metrics)
    assert [ax.get_title() for ax in bars.axes[:2]] == ["ours\nFID (digits features)", "CIFAR-10\nFID (Inception-v3)"]
    assert [t.get_text() for t in bars.axes[0].get_yticklabels()] == ["a", "b"]
    assert "not reported" in bars.axes[3].get_title()
    lines = figures.plot_beside_paper(table, sources=sources, x="x", metrics=metrics, kind="line")
    assert lines.axes[1].get_lines()[0].get_xdata().tolist() == [0.15, 0.3], "a source's own x column"
    assert lines.axes[0].get_lines()[0].get_xdata().tolist() == [0.1, 0.2]
    for figure in (bars, lines):
        plt.close(figure)
    with pytest.raises(ValueError):
        figures.plot_beside_paper(table, sources=sources, x="x", metrics=metrics, kind="pie")


def test_loss_curve_counts_the_timesteps_a_run_uses(tiny_unet, tmp_path):
    tiny_unet.save_pretrained(tmp_path / "teacher")
    spec = RunSpec(teacher=str(tmp_path / "teacher"), prune_batch=4, train_steps=0, n_samples=2, sample_steps=1)
    curve = figures.teacher_loss_curve(spec, timesteps=30, progress=False)
    assert curve["t"].tolist() == list(range(30)) and (curve["relative"] <= 1).all()
    below = curve["relative"][curve["relative"] < 1]
    assert len(below), "a random U-Net's L_t is not monotone over 30 timesteps"
    threshold = float(below.max())
    used = run(RunSpec(**{**spec.__dict__, "threshold": threshold}), root=tmp_path / "runs", progress=False)
    assert used["timesteps_used"] == timesteps_kept(curve["loss"], threshold) < 30


def test_pruned_size_moves_in_whole_groupnorm_groups(tiny_unet):
    assert figures.pruned_size(tiny_unet, 0.05)["widths"] == [16, 32, 32, 32], "m // 4 = 0 in every group"
    size = figures.pruned_size(tiny_unet, 0.3)
    assert size["widths"] == [12, 24, 24, 24] and size["dense_widths"] == [16, 32, 32, 32]
    assert 0.4 < size["params_removed"] < 0.5 and 0 < size["macs_removed"] < 1


def test_shrunk_layers_sorts_the_changed_widths_by_kind(tiny_unet):
    """At 5% the teacher's GroupNorm-coupled groups stay whole (m < G): only the time embedding, the attention
    projections and a few convolutions outside those groups shrink; at 30% the groups shrink too."""
    small, large = figures.pruned_size(tiny_unet, 0.05)["shrunk"], figures.pruned_size(tiny_unet, 0.3)["shrunk"]
    assert not small["GroupNorm"] and small["time embedding"] and small["attention"] and small["convolution"]
    assert "time_embedding.linear_1" in small["time embedding"] and all(".attentions." in n for n in small["attention"])
    assert large["GroupNorm"] and "conv_in" in large["convolution"]
    sentence = figures.shrunk_sentence(small)
    assert sentence.startswith("the time embedding") and f"{len(small['convolution'])} convolutions" in sentence
    assert figures.shrunk_sentence({kind: [] for kind in figures.SHRUNK_KINDS}) == "nothing"


def test_plot_sample_rows_captions_each_model():
    samples = {"dense": torch.zeros(4, 1, 16, 16), "pruned": torch.ones(4, 1, 16, 16)}
    figure = figures.plot_sample_rows(samples, {"pruned": "SSIM 0.5"}, n=3)
    assert [ax.get_ylabel() for ax in figure.axes] == ["dense\n", "pruned\nSSIM 0.5"]
    plt.close(figure)


def test_fit_width_points_without_lines_and_share_range():
    figure, (ours, theirs) = plt.subplots(1, 2, figsize=(10, 4))
    ours.errorbar([0, 1], [0.5, 0.9], yerr=[0.1, 0.1], fmt="o-")
    theirs.plot([0, 1, 2], [0.931, 0.932, 0.931], "-")
    theirs.plot([0, 1], [0.931, 0.932], "-")
    figures.fit_width(figure, 7.5)
    assert tuple(figure.get_size_inches()) == pytest.approx((7.5, 3.0))
    figures.points_without_lines(figure)
    assert ours.get_lines()[0].get_linestyle() == "None" and ours.get_lines()[0].get_marker() == "o"
    assert theirs.get_lines()[0].get_linestyle() == "-", "three points keep their line"
    assert theirs.get_lines()[1].get_linestyle() == "None" and theirs.get_lines()[1].get_marker() == "o"
    figures.share_range([ours, theirs])
    assert ours.get_ylim() == theirs.get_ylim() and ours.get_ylim()[0] < 0.5 and ours.get_ylim()[1] > 0.932
    plt.close(figure)


def test_operator_words_and_ranking_table():
    assert figures.operator_words("down_blocks.3.resnets.1", "remove") == "down block 3, resnet 1 (removed)"
    assert figures.operator_words("mid_block.attentions.0") == "mid block, attention 0"
    ranking = pd.DataFrame({"operator": ["up_blocks.0.resnets.0", "mid_block.attentions.0"], "kind": ["resnet", "attention"],
                            "modification": ["replace", "remove"], "score": [0.5, 0.001], "macs_removed": [100, 50],
                            "rank": [2, 1], "applied": [False, True]})
    table = figures.ranking_table(ranking, 1000)
    assert list(table.columns) == ["operator", "score", "macs share", "applied"]
    assert table["operator"].tolist() == ["mid block, attention 0 (removed)", "up block 0, resnet 0 (replaced)"]
    assert table["macs share"].tolist() == [0.05, 0.1] and table["applied"].tolist() == ["yes", "no"]
    figure = figures.plot_operator_scores(ranking, "title")
    ax = figure.axes[0]
    assert ax.get_xscale() == "log" and figure.get_size_inches()[0] <= 7.5
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["mid path", "up path", "applied"]  # only paths drawn
    assert all(patch.get_width() > 0 for patch in ax.patches)  # no zero-length bar
    plt.close(figure)
