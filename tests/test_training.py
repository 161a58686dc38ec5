import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DModel
from safetensors.torch import load_file

from diffprune_core import training
from diffprune_core.checkpoints import load_unet
from diffprune_core.errors import InputError
from diffprune_core.pipeline import DiffusionModel
from diffprune_core.training import (TrainConfig, batch_indices, checkpoint_dirs, draw_batch, learning_rate,
                                     residual_dropouts, train)


def tiny_unet(seed=0):
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=None)


IMAGES = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
CONFIG = TrainConfig(steps=6, batch_size=8, lr=1e-3, ema_decay=0.9, checkpoint_every=3, log_every=2)
AUGMENTED = TrainConfig(**{**vars(CONFIG), "dropout": 0.1, "horizontal_flip": True})  # the paper preset's options
COSINE = TrainConfig(**{**vars(CONFIG), "lr_schedule": "cosine"})


class Interrupted(Exception):
    pass


def interrupt_at_step(monkeypatch, step):
    """Make the loss of ``step`` (0-based) raise, as a killed run would stop there."""
    calls = []
    real_loss = training.ddpm_loss

    def loss(*args):
        calls.append(1)
        if len(calls) == step + 1:
            raise Interrupted
        return real_loss(*args)

    monkeypatch.setattr(training, "ddpm_loss", loss)


def assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("config", [CONFIG, AUGMENTED, COSINE], ids=["plain", "dropout-and-flips", "cosine"])
def test_resumed_run_ends_bit_identical_to_uninterrupted(tmp_path, monkeypatch, config):
    whole = tiny_unet()
    train(whole, IMAGES, config, tmp_path / "whole", progress=False)

    interrupt_at_step(monkeypatch, 4)  # steps 0-2 checkpointed at 3, step 3 done and lost, step 4 crashes
    with pytest.raises(Interrupted):
        train(tiny_unet(), IMAGES, config, tmp_path / "resumed", progress=False)
    assert [p.name for p in checkpoint_dirs(tmp_path / "resumed")] == ["step-000003"]
    monkeypatch.undo()
    resumed = tiny_unet(seed=1)  # the initial weights must not matter when resuming
    report = train(resumed, IMAGES, config, tmp_path / "resumed", progress=False)

    assert report["resumed_from_step"] == 3
    assert_same_tensors(whole.state_dict(), resumed.state_dict())
    for name in ("whole", "resumed"):  # the raw weights and Adam moments too, not only the EMA
        assert (tmp_path / name / "checkpoints" / "step-000006" / "state.safetensors").is_file()
    assert_same_tensors(load_file(tmp_path / "whole/checkpoints/step-000006/state.safetensors"),
                        load_file(tmp_path / "resumed/checkpoints/step-000006/state.safetensors"))
    assert (tmp_path / "whole/loss.csv").read_text() == (tmp_path / "resumed/loss.csv").read_text()


def test_outputs_checkpoints_and_ema_result(tmp_path):
    model = tiny_unet()
    report = train(model, IMAGES, CONFIG, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"step-000003", "step-000006"}
    for checkpoint in (run / "checkpoints").iterdir():  # safetensors + JSON only
        assert sorted(p.name for p in checkpoint.iterdir()) == ["state.json", "state.safetensors"]
    state = json.loads((run / "checkpoints/step-000006/state.json").read_text())
    assert state["step"] == 6 and state["samples_seen"] == 48 and state["config"]["lr"] == 1e-3
    tensors = load_file(run / "checkpoints/step-000006/state.safetensors")
    assert any(key.startswith("optimizer.") and key.endswith(".exp_avg_sq") for key in tensors)

    ema = {key.removeprefix("ema.model."): value for key, value in tensors.items() if key.startswith("ema.")}
    raw = {key.removeprefix("model."): value for key, value in tensors.items() if key.startswith("model.")}
    result = dict(model.named_parameters())
    assert ema.keys() == result.keys()
    assert all(torch.equal(result[key], ema[key]) for key in ema)  # the result is the EMA...
    assert not all(torch.equal(ema[key], raw[key]) for key in ema)  # ... which differs from the raw weights
    assert_same_tensors(model.state_dict(), load_unet(str(run / "model")).state_dict())

    losses = (run / "loss.csv").read_text().splitlines()
    assert losses[0] == "step,loss" and [int(row.split(",")[0]) for row in losses[1:]] == [1, 2, 3, 4, 5, 6]
    saved = json.loads((run / "report.json").read_text())
    assert saved["steps"] == 6 and saved["config"] == report["config"] and saved["final_loss"] > 0


def test_two_processes_train_the_same_model_as_one(tmp_path):
    """Under a distributed launch each process takes half of every global batch (gloo on the CPU here)."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_training import CONFIG, IMAGES, tiny_unet
        from diffprune_core.training import train
        train(tiny_unet(), IMAGES, CONFIG, sys.argv[1], progress=False)
    """))
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(script), str(tmp_path / "two")], env=env, check=True, capture_output=True)
    one = tiny_unet()
    train(one, IMAGES, CONFIG, tmp_path / "one", progress=False)
    assert json.loads((tmp_path / "two/report.json").read_text())["processes"] == 2
    two = load_unet(str(tmp_path / "two/model")).state_dict()
    for key, value in one.state_dict().items():  # equal up to the order of the float reductions
        torch.testing.assert_close(two[key], value, rtol=0, atol=1e-4)


def test_training_reduces_the_loss(tmp_path):
    config = TrainConfig(steps=40, batch_size=16, lr=3e-3, ema_decay=0.9, checkpoint_every=40, log_every=10)
    train(tiny_unet(), IMAGES, config, tmp_path / "run", progress=False)
    losses = [float(row.split(",")[1]) for row in (tmp_path / "run/loss.csv").read_text().splitlines()[1:]]
    assert sum(losses[-10:]) < 0.8 * sum(losses[:10])


def test_data_order_is_a_function_of_seed_and_step():
    batches = torch.cat([batch_indices(10, 4, seed=0, step=step) for step in range(5)])  # 20 draws: 2 epochs
    assert sorted(batches[:10].tolist()) == list(range(10)) and sorted(batches[10:].tolist()) == list(range(10))
    assert torch.equal(batch_indices(10, 4, seed=0, step=3), batches[12:16])
    assert not torch.equal(batch_indices(10, 4, seed=1, step=3), batches[12:16])
    assert sorted(batch_indices(3, 7, seed=0, step=0)[:6].tolist()) == [0, 0, 1, 1, 2, 2]  # batch > dataset


def test_learning_rate_schedules():
    assert [learning_rate(CONFIG, step) for step in range(6)] == [1e-3] * 6
    cosine = [learning_rate(COSINE, step) for step in range(6)]  # lr (1 + cos(pi s / 6)) / 2
    assert cosine[0] == 1e-3 and cosine[3] == pytest.approx(0.5e-3)
    assert cosine[1] == pytest.approx(1e-3 * (2 + math.sqrt(3)) / 4) and cosine[5] == pytest.approx(1e-3 * (2 - math.sqrt(3)) / 4)
    assert all(a > b > 0 for a, b in zip(cosine, cosine[1:]))


def test_the_cosine_schedule_scales_each_update(tmp_path):
    """Both runs take the same first step (the learning rate of step 0 is lr); their next steps see the same
    gradients and Adam moments, so the cosine run's second update is the constant run's times (1 + cos(pi / 4)) / 2."""
    runs = {}
    for config in (CONFIG, COSINE):
        out = tmp_path / config.lr_schedule
        train(tiny_unet(), IMAGES, TrainConfig(**{**vars(config), "steps": 4, "checkpoint_every": 1}), out, progress=False)
        runs[config.lr_schedule] = [{key: value for key, value in load_file(
            out / "checkpoints" / f"step-{step:06d}" / "state.safetensors").items() if key.startswith("model.")}
            for step in (1, 2)]
    assert_same_tensors(runs["constant"][0], runs["cosine"][0])
    factor = (1 + math.cos(math.pi / 4)) / 2
    for key, start in runs["constant"][0].items():
        torch.testing.assert_close(runs["cosine"][1][key] - start, factor * (runs["constant"][1][key] - start),
                                   rtol=1e-3, atol=1e-6)  # float32 rounding of weights near 1; a missed schedule is off by 1e-4
    assert any(not torch.equal(runs["cosine"][1][key], runs["constant"][1][key]) for key in runs["constant"][1])


def test_a_cosine_run_resumes_only_to_its_own_length(tmp_path):
    train(tiny_unet(), IMAGES, COSINE, tmp_path / "run", progress=False)
    with pytest.raises(InputError, match="steps of a cosine schedule"):
        train(tiny_unet(), IMAGES, TrainConfig(**{**vars(COSINE), "steps": 8}), tmp_path / "run", progress=False)


def test_presets_and_bad_configs():
    paper = TrainConfig.paper_cifar10()
    assert (paper.lr, paper.batch_size, paper.ema_decay, paper.grad_clip) == (2e-4, 128, 0.9999, 1.0)
    assert (paper.dropout, paper.horizontal_flip) == (0.1, True), "ddpm_exp/configs/cifar10.yml, lines 8 and 20"
    cpu = TrainConfig.cpu(steps=10)
    assert cpu.steps == 10 and (cpu.dropout, cpu.horizontal_flip) == (None, False), "the digits teacher's recipe"
    for bad in ({"steps": 0}, {"lr": 0.0}, {"ema_decay": 1.0}, {"grad_clip": -1.0}, {"checkpoint_every": 0},
                {"dropout": 1.0}, {"dropout": -0.1}, {"lr_schedule": "linear"}):
        with pytest.raises(InputError):
            TrainConfig.cpu(**bad)


def flips(seed: int, step: int) -> list:
    """Which images of step ``step``'s batch come mirrored (each is either itself or its mirror)."""
    flipped = draw_batch(IMAGES, 8, seed, step, 1000, flip=True)[0]
    plain = draw_batch(IMAGES, 8, seed, step, 1000)[0]
    assert all(torch.equal(x, y) or torch.equal(x, y.flip(-1)) for x, y in zip(flipped, plain))
    return [not torch.equal(x, y) for x, y in zip(flipped, plain)]


def test_flips_are_a_function_of_seed_and_step():
    flipped = draw_batch(IMAGES, 8, seed=0, step=3, num_timesteps=1000, flip=True)
    again = draw_batch(IMAGES, 8, seed=0, step=3, num_timesteps=1000, flip=True)
    plain = draw_batch(IMAGES, 8, seed=0, step=3, num_timesteps=1000)
    assert all(torch.equal(a, b) for a, b in zip(flipped, again))
    assert torch.equal(flipped[1], plain[1]) and torch.equal(flipped[2], plain[2]), "t and eps are not disturbed"
    assert 0 < sum(flips(0, 3)) < 8, "about half of the batch"
    assert len({tuple(flips(0, step)) for step in range(4)}) > 1 and flips(1, 3) != flips(0, 3)


def test_training_sees_the_flipped_batches(tmp_path, monkeypatch):
    seen = []
    real_loss = training.ddpm_loss
    monkeypatch.setattr(training, "ddpm_loss", lambda unet, x0, *args: seen.append(x0) or real_loss(unet, x0, *args))
    train(tiny_unet(), IMAGES, AUGMENTED, tmp_path / "run", progress=False)
    assert all(torch.equal(x0, draw_batch(IMAGES, 8, AUGMENTED.seed, step, 1000, flip=True)[0])
               for step, x0 in enumerate(seen)) and len(seen) == AUGMENTED.steps


def test_dropout_applies_while_training_only(tmp_path, monkeypatch):
    seen = []
    real_loss = training.ddpm_loss

    def loss(unet, *args):
        seen.append((unet.training, [layer.p for layer in residual_dropouts(unet)]))
        return real_loss(unet, *args)

    monkeypatch.setattr(training, "ddpm_loss", loss)
    model = tiny_unet()
    train(model, IMAGES, TrainConfig(**{**vars(CONFIG), "dropout": 0.5}), tmp_path / "dropout", progress=False)
    assert len(seen) == CONFIG.steps and all(mode and rates and set(rates) == {0.5} for mode, rates in seen)
    assert {layer.p for layer in residual_dropouts(model)} == {0.0}, "the model's own rate again"
    saved = load_unet(str(tmp_path / "dropout" / "model"))
    assert saved.config.dropout == 0.0 and {layer.p for layer in residual_dropouts(saved)} == {0.0}
    monkeypatch.undo()
    plain = tiny_unet()
    train(plain, IMAGES, CONFIG, tmp_path / "plain", progress=False)
    assert not torch.equal(plain.conv_out.weight, model.conv_out.weight), "the rate reaches the forward pass"

    interrupt_at_step(monkeypatch, 1)
    interrupted = tiny_unet()
    with pytest.raises(Interrupted):
        train(interrupted, IMAGES, TrainConfig(**{**vars(CONFIG), "dropout": 0.5}), tmp_path / "x", progress=False)
    assert {layer.p for layer in residual_dropouts(interrupted)} == {0.0}, "restored on the way out too"


def test_checkpoints_from_before_dropout_and_flips_resume(tmp_path):
    """A state.json without the newer settings was made with their defaults (no dropout change, no flips)."""
    train(tiny_unet(), IMAGES, CONFIG, tmp_path / "run", progress=False)
    state_file = tmp_path / "run/checkpoints/step-000006/state.json"
    state = json.loads(state_file.read_text())
    for key in ("dropout", "horizontal_flip"):
        del state["config"][key]
    state_file.write_text(json.dumps(state))
    with pytest.raises(InputError, match="made with"):
        train(tiny_unet(), IMAGES, TrainConfig(**{**vars(AUGMENTED), "steps": 8}), tmp_path / "run", progress=False)
    report = train(tiny_unet(), IMAGES, TrainConfig(**{**vars(CONFIG), "steps": 8}), tmp_path / "run", progress=False)
    assert report["resumed_from_step"] == 6


def test_flips_are_for_pixel_models(tmp_path):
    autoencoder = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=1, block_out_channels=(4,),
                                norm_num_groups=4, sample_size=8)
    latent = DiffusionModel(unet=tiny_unet(), autoencoder=autoencoder)
    with pytest.raises(InputError, match="pixel models"):
        train(latent, IMAGES, AUGMENTED, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_refuses_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="takes images of 1 x 8 x 8"):
        train(tiny_unet(), torch.zeros(4, 3, 8, 8), CONFIG, tmp_path / "a", progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        train(tiny_unet(), IMAGES, CONFIG, tmp_path / "busy", progress=False)
    train(tiny_unet(), IMAGES, CONFIG, tmp_path / "run", progress=False)
    with pytest.raises(InputError, match="not empty"):
        train(tiny_unet(), IMAGES, CONFIG, tmp_path / "run", resume=False, progress=False)
    with pytest.raises(InputError, match="made with"):  # resuming with another learning rate
        train(tiny_unet(), IMAGES, TrainConfig(**{**vars(CONFIG), "lr": 1e-2}), tmp_path / "run", progress=False)
    with pytest.raises(InputError, match="beyond"):
        train(tiny_unet(), IMAGES, TrainConfig(**{**vars(CONFIG), "steps": 4}), tmp_path / "run", progress=False)
