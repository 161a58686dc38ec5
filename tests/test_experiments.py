"""The shared prune -> fine-tune -> sample -> measure runs behind the book's tables, on a tiny teacher."""
import json
from dataclasses import replace

import pytest

from diffprune_core.errors import InputError
import torch

from diffprune_core.checkpoints import load_unet
from diffprune_core.criteria import accumulate_gradients
from diffprune_core.experiments import (RunSpec, gradient_sums, run, run_key, ssim_versus_timesteps, table,
                                        teacher_spec)
from diffprune_core.pipeline import noise_scheduler


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
    assert rows.timesteps_used[1] >= 1 and rows.timesteps_used[2] == 0
    for column in ["macs", "macs_with_attention", "fid", "seconds_per_image", "confident_rate"]:
        assert column in rows
    metrics = root / run_key(spec) / "metrics.json"
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "fid": -1.0}))
    assert run(spec, root=root)["fid"] == -1.0, "a finished run is read back, not recomputed"


def test_keys_differ_by_setting(spec):
    assert run_key(spec) != run_key(replace(spec, threshold=0.02))
    assert run_key(spec).startswith("diff-pruning-r0.3-s2-")


def test_teacher_runs_ignore_pruning_and_training_settings(spec):
    assert run_key(replace(spec, method="teacher")) == run_key(teacher_spec(spec))
    assert run_key(replace(spec, method="teacher", n_samples=8)) != run_key(teacher_spec(spec))


def test_unknown_method(spec):
    with pytest.raises(InputError, match="unknown method"):
        replace(spec, method="pruned")


def test_ssim_versus_timesteps(spec, tmp_path):
    frame = ssim_versus_timesteps(replace(spec, ratio=0.3), [1, 3], root=tmp_path / "runs", progress=False)
    assert list(frame.timesteps) == [1, 3] and frame.ssim.between(-1, 1).all()


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
