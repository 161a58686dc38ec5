"""The shared prune -> fine-tune -> sample -> measure runs behind the book's tables, on a tiny teacher."""
import json
import shutil
from dataclasses import replace

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from diffprune_core import results
from diffprune_core.architectures import example_inputs
from diffprune_core.checkpoints import load_model, load_unet
from diffprune_core.complexity import count_macs
from diffprune_core.criteria import StructureImportance, accumulate_gradients, timestep_losses
from diffprune_core.digits_classifier import classify_samples
from diffprune_core.errors import InputError
from diffprune_core.experiments import (TIMING_METRICS, RunSpec, algorithm1_examples, gradient_sums, gradient_sums_dir, load_samples,
                                        load_teacher, replicates, run, run_key, share_gradient_sums, ssim_versus_timesteps, table,
                                        teacher_spec, timestep_sums)
from diffprune_core.fid import fid
from diffprune_core.metrics import mean_ssim, ssim
from diffprune_core.pipeline import noise_scheduler
from diffprune_core.pruner import prune_unet
from diffprune_core.sampling import ddim_sample
from diffprune_core.thresholds import relative_losses, timesteps_kept

pytestmark = pytest.mark.usefixtures("one_thread")  # the runs compute with one thread: so do the checks beside them


@pytest.fixture
def spec(tiny_unet, tmp_path):
    tiny_unet.save_pretrained(tmp_path / "teacher")
    return RunSpec(teacher=str(tmp_path / "teacher"), prune_batch=4, train_steps=2, n_samples=4, sample_steps=2)


def test_runs_are_measured_once_and_cached(spec, tmp_path):
    root = tmp_path / "runs"
    specs = [replace(spec, method="teacher"), spec, replace(spec, method="scratch")]
    rows = table(specs, root=root, progress=False)
    assert list(rows.method) == ["teacher", "diff-pruning", "scratch"]
    assert rows.ssim[0] == 1.0 and rows.params[1] < rows.params[0] and rows.params[1] == rows.params[2]
    assert rows.timesteps_used[2] == 0
    model, examples = load_teacher(spec)  # the loss curve of Algorithm 1's batch and noise, outside the run
    losses = timestep_losses(model, algorithm1_examples(examples, spec).images, timesteps=range(1000), seed=spec.seed,
                             progress=False)
    assert rows.timesteps_used[1] == timesteps_kept(losses, spec.threshold)
    trained = load_model(str(root / run_key(spec) / "train" / "model"))  # the fine-tuned model the run measured
    size = count_macs(trained.unet, example_inputs(trained))
    assert (rows.params[1], rows.macs[1], rows.macs_with_attention[1]) == (
        size["params"], size["macs"], size["macs_with_attention"])
    teacher_samples = load_samples(specs[0], root)
    again = ddim_sample(load_model(spec.teacher), n=spec.n_samples, seed=spec.seed, steps=spec.sample_steps,
                        progress=False)
    assert torch.equal(teacher_samples, ((again + 1) * 127.5).round().clamp(0, 255) / 127.5 - 1), \
        "the teacher's samples come from the seed's x_T"
    samples = load_samples(spec, root)
    assert rows.fid[1] == pytest.approx(fid(samples, examples.images, reference_name="digits-all")["value"], rel=1e-6)
    assert rows.ssim[1] == pytest.approx(mean_ssim(samples, teacher_samples), abs=1e-3)
    assert rows.confident_rate[1] == pytest.approx(classify_samples(samples)["confident_rate"])
    assert rows.seconds_per_image[1] > 0
    metrics = root / run_key(spec) / "metrics.json"
    phases = json.loads(metrics.read_text())["phases_s"]  # the build profile's (tools/build_profile.py)
    assert set(phases) == {"pruning", "fine_tuning", "sampling", "measuring"}
    assert rows.seconds_per_image[1] == pytest.approx(phases["sampling"] / spec.n_samples, abs=0.01)
    assert sum(phases.values()) <= rows.wall_time_s[1] + 0.1
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "fid": -1.0}))
    assert run(spec, root=root)["fid"] == -1.0, "a finished run is read back, not recomputed"


def test_fid_over_independent_sets_of_samples(spec, tmp_path):
    """With fid_sets, FID is the mean over sets of n_samples samples, each set its own x_T, with the t interval of
    that mean; the first set is the one-set run's samples, and SSIM pairs every sample with the teacher's."""
    root, sets = tmp_path / "runs", replace(spec, n_samples=3, fid_sets=3)
    measured = run(sets, root=root, progress=False)
    samples, teacher = load_samples(sets, root), load_samples(teacher_spec(sets), root)
    _, examples = load_teacher(spec)
    each = [fid(block, examples.images, reference_name="digits-all")["value"] for block in samples.split(3)]
    assert len(samples) == 9 and measured["fid_per_set"] == pytest.approx(each, rel=1e-6)
    mean, sd = sum(each) / 3, torch.tensor(each, dtype=torch.float64).std().item()
    half = 4.302653 * sd / 3 ** 0.5  # Student's t, 2 degrees of freedom, 95%
    assert measured["fid"] == pytest.approx(mean, rel=1e-6)
    assert measured["fid_interval"] == pytest.approx([mean - half, mean + half], rel=1e-5)
    assert measured["ssim"] == pytest.approx(mean_ssim(samples, teacher), abs=1e-3)
    # set 0 is the one-set run's: the same x_T and model, though a batch of 9 against one of 3 may round a pixel to
    # the next of its 256 levels on some CPUs
    torch.testing.assert_close(samples[:3], load_samples(replace(sets, fid_sets=1), root), rtol=0, atol=1.01 / 127.5)
    assert "fid_interval" not in run(replace(sets, fid_sets=1), root=root), "one set: no interval"
    with pytest.raises(InputError, match="fid_sets"):
        replace(spec, fid_sets=0)


def test_keys_differ_by_setting_and_by_package_version(spec, monkeypatch):
    assert run_key(spec) != run_key(replace(spec, threshold=0.02))
    assert run_key(spec) != run_key(replace(spec, score_form="released-code"))
    assert run_key(spec).startswith("diff-pruning-r0.3-s2-")
    before, versions = run_key(spec), results.package_versions()
    monkeypatch.setattr(results, "package_versions", lambda: {**versions, "torch-pruning": "0.0.0"})
    assert run_key(spec) != before, "a cached run must not outlive the packages that made it"


def test_a_changed_library_line_reruns_the_runs_and_their_gradient_sums(spec, tmp_path, monkeypatch):
    library = tmp_path / "diffprune_core"  # a copy whose source the digest reads; the code in effect stays
    shutil.copytree(results.LIBRARY_DIR, library, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(results, "LIBRARY_DIR", library)
    root = tmp_path / "runs"
    first = run(spec, root=root, progress=False)
    metrics = root / run_key(spec) / "metrics.json"
    metrics.write_text(json.dumps({**first, "fid": -1.0}))
    assert run(spec, root=root)["fid"] == -1.0, "unchanged library: read back"
    sums = gradient_sums_dir(spec, root)
    with open(library / "sampling.py", "a") as file:
        file.write("# one changed line\n")
    assert gradient_sums_dir(spec, root) != sums
    assert run(spec, root=root, progress=False)["fid"] == first["fid"], "changed library: computed again"
    assert len(list(root.glob("teacher-*/metrics.json"))) == 2, "the teacher's reference samples too"


def test_replicates_run_every_spec_at_every_seed(spec, tmp_path):
    root = tmp_path / "runs"
    specs = [replace(spec, method="teacher"), replace(spec, method="magnitude")]
    runs = replicates(specs, [0, 1], root=root, progress=False)
    assert list(zip(runs.row, runs.seed, runs.method)) == [(0, 0, "teacher"), (1, 0, "magnitude"),
                                                            (0, 1, "teacher"), (1, 1, "magnitude")]
    assert runs.fid[0] != runs.fid[2], "another seed draws other samples"
    assert runs.fid[3] == run(replace(specs[1], seed=1), root=root)["fid"]
    with pytest.raises(InputError, match="distinct"):
        replicates(specs, [0, 0], root=root)


def test_runs_at_once_give_the_numbers_of_runs_one_after_another(spec, tmp_path):
    """Two worker processes (each run with one thread) and this process alone compute the same runs, bit for bit:
    what they share (the teacher's run, the gradient sums of T = 0 and T = 0.05 from one pass) comes first."""
    specs = [replace(spec, method="teacher"), spec, replace(spec, method="taylor"), replace(spec, method="scratch"),
             replace(spec, threshold=0.0)]
    apart = table(specs, root=tmp_path / "apart", progress=False, workers=1)
    together = table(specs, root=tmp_path / "together", progress=False, workers=2)
    timing = list(TIMING_METRICS)
    pd.testing.assert_frame_equal(apart.drop(columns=timing), together.drop(columns=timing))
    for one in specs:
        assert torch.equal(load_samples(one, tmp_path / "apart"), load_samples(one, tmp_path / "together"))
    assert sorted(path.name.split("-")[0] for path in (tmp_path / "together" / "gradients").iterdir()) == ["T0", "T0.05"]
    with pytest.raises(InputError, match="workers must be at least 1"):
        table(specs, root=tmp_path / "apart", workers=0)


def test_a_longer_run_trains_on_from_the_cached_shorter_one(spec, tmp_path):
    """Runs that differ only in their training steps train once: the longer continues the shorter's last
    checkpoint (in one worker, after it) and measures what a run trained from its start measures, bit for bit."""
    shorter, longer = (replace(spec, method="scratch", train_steps=steps) for steps in (2, 3))
    chained = table([longer, shorter, replace(spec, method="teacher")], root=tmp_path / "chained", progress=False,
                    workers=2)
    alone = table([longer], root=tmp_path / "alone", progress=False, workers=1)
    timing = list(TIMING_METRICS)
    pd.testing.assert_frame_equal(chained.head(1).drop(columns=timing), alone.drop(columns=timing))
    assert torch.equal(load_samples(longer, tmp_path / "chained"), load_samples(longer, tmp_path / "alone"))
    reports = {name: json.loads((tmp_path / name / run_key(longer) / "train" / "report.json").read_text())
               for name in ("chained", "alone")}
    assert reports["chained"]["resumed_from_step"] == 2 and reports["alone"]["resumed_from_step"] == 0
    losses = [pd.read_csv(tmp_path / name / run_key(longer) / "train" / "loss.csv") for name in ("chained", "alone")]
    pd.testing.assert_frame_equal(*losses)
    other = replace(spec, method="magnitude", train_steps=3)  # another pruning: nothing to continue
    run(other, root=tmp_path / "chained", progress=False)
    report = json.loads((tmp_path / "chained" / run_key(other) / "train" / "report.json").read_text())
    assert report["resumed_from_step"] == 0


def test_teacher_runs_ignore_pruning_and_training_settings(spec):
    assert run_key(replace(spec, method="teacher")) == run_key(teacher_spec(spec))
    assert run_key(replace(spec, method="teacher", n_samples=8)) != run_key(teacher_spec(spec))


def test_unknown_method(spec):
    with pytest.raises(InputError, match="unknown method"):
        replace(spec, method="pruned")


def test_figure5_passes_keep_the_runs_sums_bit_for_bit(spec, tmp_path):
    """The sums a Figure 5 pass keeps for the runs, at a T it stops at on the way and at T = 0 after every timestep,
    are those of the runs' own pass (share_gradient_sums), bit for bit; a pass short of every timestep keeps only
    the T it got to."""
    model, examples = load_teacher(spec)
    losses = timestep_losses(model, algorithm1_examples(examples, spec).images, timesteps=range(1000), seed=spec.seed,
                             progress=False)
    midway = float(relative_losses(losses)[400:600].min()) * (1 + 1e-6)  # a pass at this T stops by t = 600
    thresholds = [0.0, midway]
    kept, own = tmp_path / "kept", tmp_path / "own"
    ssim_versus_timesteps(spec, [1, 1000], [spec.seed], root=kept, progress=False, workers=1, keep_thresholds=thresholds)
    share_gradient_sums(spec, thresholds, root=own, progress=False)
    for threshold in thresholds:
        a, b = (gradient_sums_dir(replace(spec, threshold=threshold), root) for root in (kept, own))
        reports = [json.loads((folder / "report.json").read_text()) for folder in (a, b)]
        assert reports[0] == reports[1]
        sums = [load_file(folder / "gradients.safetensors") for folder in (a, b)]
        assert sums[0].keys() == sums[1].keys() and all(torch.equal(sums[0][key], sums[1][key]) for key in sums[0])
    assert 0 < reports[0]["stopped_at"] <= 600  # the last: midway
    short = tmp_path / "short"
    ssim_versus_timesteps(spec, [1, 3], [spec.seed], root=short, progress=False, workers=1, keep_thresholds=thresholds)
    assert not any(gradient_sums_dir(replace(spec, threshold=threshold), short).exists() for threshold in thresholds), \
        "neither T is reached in 3 timesteps: nothing is kept for them"


def test_figure5_keeps_the_sums_of_a_pass_capped_at_each_k(spec, tmp_path):
    """The sums a Figure 5 pass keeps at k timesteps, for its points, are those of a pass capped at k (a run with
    max_timesteps k), bit for bit, wherever k falls in a chunk of timesteps (8 a forward here)."""
    spec, counts = replace(spec, threshold=0.0), [1, 3, 8, 11]
    kept, own = tmp_path / "kept", tmp_path / "own"
    timestep_sums(spec, counts, root=kept)
    model, examples = load_teacher(spec)
    batch = algorithm1_examples(examples, spec).images
    for k in counts:
        capped = replace(spec, max_timesteps=k)
        gradient_sums(model, batch, capped, own, progress=False)
        a, b = (gradient_sums_dir(capped, root) for root in (kept, own))
        reports = [json.loads((folder / "report.json").read_text()) for folder in (a, b)]
        assert reports[0] == reports[1] and len(reports[0]["timesteps_used"]) == k
        sums = [load_file(folder / "gradients.safetensors") for folder in (a, b)]
        assert sums[0].keys() == sums[1].keys() and all(torch.equal(sums[0][key], sums[1][key]) for key in sums[0])


@pytest.mark.parametrize("score_form", ["equation", "released-code"])
def test_ssim_versus_timesteps(spec, tmp_path, score_form):
    spec = replace(spec, ratio=0.3, score_form=score_form)
    frame = ssim_versus_timesteps(spec, [3, 1], [spec.seed], root=tmp_path / "runs", progress=False)
    assert list(frame.timesteps) == [1, 3] and set(frame.seed) == {spec.seed}
    model, examples = load_teacher(spec)  # k = 3 again by hand: 3 timesteps of gradients, prune, sample
    accumulate_gradients(model, algorithm1_examples(examples, spec).images, threshold=0.0, max_steps=3, seed=spec.seed,
                         progress=False)
    prune_unet(model.unet, StructureImportance("diff-pruning", score_form=score_form), ratio=spec.ratio,
               inputs=example_inputs(model))
    samples = ddim_sample(model, n=spec.n_samples, seed=spec.seed, steps=spec.sample_steps, progress=False)
    reference = load_samples(teacher_spec(spec), tmp_path / "runs")
    assert frame.ssim[1] == mean_ssim(samples, reference)  # a pass capped at 3 sums what the longer pass kept
    assert frame.ssim_std[1] == ssim(samples, reference).std().item()
    if score_form == "equation":  # three seeds, two processes: two waves; the first seed's rows unchanged
        seeds = [spec.seed, spec.seed + 1, spec.seed + 2]
        every = ssim_versus_timesteps(spec, [1, 3], seeds, root=tmp_path / "runs", progress=False, workers=2)
        pd.testing.assert_frame_equal(every[every.seed == spec.seed], frame)
        assert list(every.seed) == [seed for seed in seeds for _ in range(2)] and list(every.timesteps) == [1, 3] * 3


def test_gradient_sums_are_computed_once_per_teacher_batch_and_threshold(spec, tmp_path):
    root, batch = tmp_path / "runs", torch.rand(4, 1, 16, 16) * 2 - 1
    fresh = load_unet(spec.teacher)
    direct = accumulate_gradients(fresh, batch, noise_scheduler().alphas_cumprod, threshold=0.5, seed=0, progress=False)
    for ratio in (0.3, 0.5):  # the second call reads the first's sums back
        model = load_unet(spec.teacher)
        report = gradient_sums(model, batch, replace(spec, ratio=ratio, threshold=0.5), root, progress=False)
        assert report.timesteps_used == direct.timesteps_used and report.losses == direct.losses
        for (name, p), q in zip(model.named_parameters(), fresh.parameters()):
            assert torch.equal(p.grad, q.grad), name
    gradient_sums(load_unet(spec.teacher), batch, replace(spec, method="taylor"), root, progress=False)
    gradient_sums(load_unet(spec.teacher), batch, replace(spec, threshold=0.0), root, progress=False)
    assert sorted(path.name.split("-")[0] for path in (root / "gradients").iterdir()) == ["T0", "T0.5"], \
        "Taylor shares Diff-Pruning's T = 0 sums"


def test_one_pass_at_T0_gives_every_thresholds_sums(spec, tmp_path):
    """share_gradient_sums takes each T's sums from the T = 0 pass; a pass of its own gives the same numbers."""
    root, spec = tmp_path / "runs", replace(spec, max_timesteps=40)
    model, examples = load_teacher(spec)
    batch = algorithm1_examples(examples, spec).images
    ratios = relative_losses(timestep_losses(model, batch, timesteps=range(40), seed=spec.seed, progress=False))
    thresholds = sorted({round(float(ratios[1:].quantile(q)), 6) for q in (0.1, 0.5, 0.9)})  # stops inside the 40
    share_gradient_sums(spec, [0.0, *thresholds], root=root, progress=False)
    stops = []
    for threshold in (0.0, *thresholds):
        direct = load_teacher(spec)[0]
        expected = accumulate_gradients(direct, batch, threshold=threshold, max_steps=40, seed=spec.seed, progress=False)
        cached = gradient_sums(model, batch, replace(spec, threshold=threshold), root, progress=False)
        assert cached.timesteps_used == expected.timesteps_used and cached.stopped_at == expected.stopped_at
        for (name, p), q in zip(model.unet.named_parameters(), direct.unet.parameters()):
            assert torch.equal(p.grad, q.grad), (threshold, name)
        stops.append(len(expected.timesteps_used))
    assert len(set(stops)) > 1, "the thresholds must stop at different timesteps for this test to mean anything"
