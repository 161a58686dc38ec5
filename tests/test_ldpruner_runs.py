"""LD-Pruner as a method of the experiment runs: ld_prune end to end, and run() with method "ld-pruner"."""
import json
from dataclasses import replace

import pandas as pd
import pytest
import torch
from diffusers import UNet2DModel

from diffprune_core.architectures import example_inputs
from diffprune_core import experiments, ldpruner
from diffprune_core.checkpoints import load_model, load_unet
from diffprune_core.complexity import count_macs
from diffprune_core.criteria import StructureImportance
from diffprune_core.errors import InputError
from diffprune_core.experiments import LD_SCORES, RunSpec, equal_macs_runs, load_samples, run_key, table
from diffprune_core.ldpruner import enumerate_operators, ld_prune, ld_scores
from diffprune_core.pruner import prune_unet
from diffprune_core.sampling import ddim_sample


pytestmark = pytest.mark.usefixtures("one_thread")


def small_unet():
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       norm_num_groups=4, attention_head_dim=4).eval()


def test_ld_prune_meets_macs_target():
    model = small_unet()
    inputs = example_inputs(model)
    dense = count_macs(model, inputs)["macs"]
    result = ld_prune(model, macs_reduction=0.3, n_gen=2, sample_steps=2, progress=False)
    reduction = 1 - count_macs(model, inputs)["macs"] / dense
    scores = result["scores"].set_index(["operator", "modification"])
    assert reduction >= 0.3 and reduction - scores.loc[result["modifications"][-1], "macs_removed"] / dense < 0.3
    assert result["modifications"] == [tuple(pair) for pair in model.diffprune_modifications]
    lowest = result["scores"].sort_values("rank").drop_duplicates("operator").head(len(result["modifications"]))
    assert result["modifications"] == list(zip(lowest["operator"], lowest["modification"]))
    assert ddim_sample(model, n=2, seed=0, steps=2, progress=False).shape == (2, 1, 8, 8)


def test_ld_prune_checks_its_target_before_scoring():
    model = small_unet()
    with pytest.raises(InputError, match="exactly one"):
        ld_prune(model, macs_reduction=0.3, n_operators=2)
    with pytest.raises(InputError, match="exactly one"):
        ld_prune(model)
    with pytest.raises(InputError, match="macs_reduction"):
        ld_prune(model, macs_reduction=1.5)
    with pytest.raises(InputError, match="n_operators"):
        ld_prune(model, n_operators=len(enumerate_operators(model)) + 1)
    assert not hasattr(model, "diffprune_modifications")


@pytest.fixture
def spec(tmp_path):
    small_unet().save_pretrained(tmp_path / "teacher")
    return RunSpec(teacher=str(tmp_path / "teacher"), method="ld-pruner", macs_reduction=0.3, train_steps=2,
                   n_samples=4, sample_steps=2, n_gen=2, score_steps=2)


def test_ld_pruner_runs_measure_and_reload(spec, tmp_path):
    root = tmp_path / "runs"
    scratch = replace(spec, method="ld-pruner-scratch")
    rows = table([replace(spec, method="teacher"), spec, scratch], root=root, progress=False)
    teacher, pruned, from_scratch = rows.to_dict("records")
    assert 1 - pruned["macs"] / teacher["macs"] >= 0.3 and pruned["operators_modified"] >= 1
    assert pruned["ratio"] is None and pruned["timesteps_used"] == 0
    assert (from_scratch["params"], from_scratch["macs"]) == (pruned["params"], pruned["macs"])
    for column in ["fid", "ssim", "seconds_per_image", "confident_rate"]:
        assert pd.notna(pruned[column])
    assert run_key(spec).startswith("ld-pruner-m0.3-s2-")

    folder = root / run_key(spec)
    ranking = pd.read_csv(folder / LD_SCORES)
    assert sorted(ranking["rank"]) == list(range(1, len(ranking) + 1))
    widths = json.loads((folder / "train" / "model" / "widths.json").read_text())
    assert len(widths["operator_modifications"]) == pruned["operators_modified"]
    model = load_unet(str(folder / "train" / "model"))
    assert count_macs(model, example_inputs(model))["macs"] == pruned["macs"]
    samples = ddim_sample(model, n=spec.n_samples, seed=spec.seed, steps=spec.sample_steps, progress=False)
    torch.testing.assert_close(samples, load_samples(spec, root), atol=1 / 127.5, rtol=0)  # the run's model, reloaded

    scratch_model = load_unet(str(root / run_key(scratch) / "train" / "model"))
    assert json.loads((root / run_key(scratch) / "train" / "model" / "widths.json").read_text()) == widths
    assert not torch.equal(scratch_model.conv_in.weight, model.conv_in.weight)


def test_ld_pruner_runs_of_one_teacher_score_its_operators_once(spec, tmp_path, monkeypatch):
    """The runs without fine-tuning, with it and from scratch prune by one scoring, computed before them: the
    scores ld_scores gives the teacher, to the last bit."""
    scorings = []
    score_operators = ldpruner.score_operators
    monkeypatch.setattr(ldpruner, "score_operators", lambda *args, **kwargs: (scorings.append(args),
                                                                              score_operators(*args, **kwargs))[1])
    root = tmp_path / "runs"
    specs = [replace(spec, train_steps=0), spec, replace(spec, method="ld-pruner-scratch")]
    table(specs, root=root, progress=False, workers=1)
    assert len(scorings) == 1
    expected = ld_scores(load_model(spec.teacher), n_gen=spec.n_gen, sample_steps=spec.score_steps, seed=spec.seed,
                         progress=False)
    for each in specs:
        pd.testing.assert_frame_equal(pd.read_csv(root / run_key(each) / LD_SCORES), expected, check_exact=True)


def test_equal_macs_runs_count_the_target_first_and_compute_every_comparison_in_one_pool(spec, tmp_path, monkeypatch):
    """LD-Pruner's target is the MACs share the ratio's widths remove, counted before any run: what Diff-Pruning's
    runs remove, checked. The runs of two comparisons (both methods, every budget, scratch) are one run_all."""
    pools = []
    run_all = experiments.run_all
    monkeypatch.setattr(experiments, "run_all",
                        lambda specs, **kwargs: (pools.append(specs), run_all(specs, **kwargs))[1])
    base = replace(spec, method="diff-pruning", ratio=0.3, macs_reduction=None, threshold=0.05, max_timesteps=3)
    comparisons = [(base, [2, 0]), (replace(base, ratio=0.5), [0])]
    results = equal_macs_runs(comparisons, root=tmp_path / "runs", progress=False, workers=1)
    assert [len(specs) for specs in pools] == [(2 + 2 + 1) + (1 + 1 + 1)]  # run_all adds the teachers
    for result, (each, budgets) in zip(results, comparisons):
        model = load_model(spec.teacher)
        inputs = example_inputs(model)
        dense = count_macs(model.unet, inputs)["macs"]
        prune_unet(model.unet, StructureImportance("random", seed=1), ratio=each.ratio, inputs=inputs)
        assert result.macs_reduction == round(1 - count_macs(model.unet, inputs)["macs"] / dense, 4) > 0
        assert sorted(result.dp) == sorted(result.ld) == sorted(budgets)
        for steps in budgets:
            assert round(1 - result.dp[steps]["macs"] / result.dense["macs"], 4) == result.macs_reduction
            assert 1 - result.ld[steps]["macs"] / result.dense["macs"] >= result.macs_reduction
        assert result.scratch["macs"] == result.ld[max(budgets)]["macs"]
    assert results[1].macs_reduction > results[0].macs_reduction
    monkeypatch.setattr(experiments, "channel_macs_reduction", lambda spec: 0.1234)
    with pytest.raises(RuntimeError, match="depend on more than the ratio"):
        equal_macs_runs(comparisons[:1], root=tmp_path / "runs", progress=False, workers=1)


def test_ld_pruner_run_needs_macs_reduction(spec):
    with pytest.raises(InputError, match="macs_reduction"):
        replace(spec, macs_reduction=None)
