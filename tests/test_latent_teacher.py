"""The latent miniature in data/latent_teacher is the one its manifest describes, and its recipe runs."""
import json

import pandas as pd
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from diffprune_core import latent_teacher
from diffprune_core.architectures import DATA_DIR
from diffprune_core.checkpoints import load_model
from diffprune_core.complexity import count_params
from diffprune_core.errors import InputError
from diffprune_core.latent_teacher import (AUTOENCODER_KWARGS, UNET_KWARGS, check_latent_teacher, main,
                                           make_autoencoder, make_latent_teacher)
from diffprune_core.pipeline import ClassEmbedder
from diffprune_core.sampling import ddim_sample

TEACHER_DIR = DATA_DIR / "latent_teacher"
pytestmark = pytest.mark.usefixtures("one_thread")


def test_shipped_weights_match_the_manifest():
    manifest = check_latent_teacher(TEACHER_DIR)
    assert set(manifest["sha256"]) == {"vae/diffusion_pytorch_model.safetensors",
                                       "unet/diffusion_pytorch_model.safetensors",
                                       "class_embedder/diffusion_pytorch_model.safetensors"}


def test_loads_as_a_class_ldm_in_the_documented_shape():
    model = load_model(str(TEACHER_DIR))
    manifest = json.loads((TEACHER_DIR / "manifest.json").read_text())
    assert model.pipeline == "ClassLDMPipeline"
    assert isinstance(model.unet, UNet2DConditionModel) and isinstance(model.autoencoder, AutoencoderKL)
    assert isinstance(model.class_embedder, ClassEmbedder) and model.class_labels() == ("labels", 10)
    for kwargs, module in ((UNET_KWARGS, model.unet), (AUTOENCODER_KWARGS, model.autoencoder)):
        for key, value in kwargs.items():
            assert module.config[key] == (list(value) if isinstance(value, tuple) else value), key
    assert {name: count_params(module) for name, module in model.components().items()} == manifest["params"]
    assert model.latent_shape == (3, 8, 8) and model.image_shape == (1, 16, 16)
    assert model.schedule.config.beta_schedule == "scaled_linear" and not model.schedule.config.clip_sample
    heads = {block.attentions[0].transformer_blocks[0].attn1.heads for block in model.unet.down_blocks[1:]}
    assert heads == {2, 3}, "multi-head attention, 32 channels per head"
    samples = ddim_sample(model, n=2, seed=0, steps=2, labels=[0, 7], progress=False)
    assert samples.shape == (2, 1, 16, 16) and torch.isfinite(samples).all()


def test_manifest_records_recipes_times_and_quality():
    manifest = json.loads((TEACHER_DIR / "manifest.json").read_text())
    autoencoder, unet = manifest["autoencoder_training"], manifest["unet_training"]
    assert manifest["recipe"] == [
        f"python -m diffprune_core.latent_teacher autoencoder --out data/latent_teacher.training/autoencoder "
        f"--steps {autoencoder['steps']} --seed {manifest['seed']}",
        f"python -m diffprune_core.latent_teacher unet --autoencoder data/latent_teacher.training/autoencoder "
        f"--out data/latent_teacher --steps {unet['steps']} --seed {manifest['seed']}"]
    assert manifest["training_wall_time_s"] == pytest.approx(autoencoder["wall_time_s"] + unet["wall_time_s"])
    assert manifest["training_wall_time_s"] < 60 * 60, "the issue's budget: both recipes within an hour"
    assert len(pd.read_csv(TEACHER_DIR / "autoencoder_loss.csv")) == autoencoder["steps"]
    assert pd.read_csv(TEACHER_DIR / "unet_loss.csv")["step"].tolist() == list(range(1, unet["steps"] + 1))
    quality, real = manifest["quality"]["samples"], manifest["quality"]["real_digits"]
    assert quality["n"] == real["n"] == 1000 and quality["fid_label"] == "FID (digits features)"
    assert quality["class_accuracy"] > 0.5, "the model draws the digit it is asked for far more often than chance"
    assert autoencoder["reconstruction"]["ssim"] > 0.95
    for name in ("samples.png", "loss.png"):
        assert (TEACHER_DIR / name).is_file()


def test_tampered_weights_are_refused(tmp_path):
    import shutil

    shutil.copytree(TEACHER_DIR, tmp_path / "copy")
    weights = tmp_path / "copy" / "class_embedder" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(InputError, match="do not match the sha256"):
        check_latent_teacher(tmp_path / "copy")


def test_recipe_end_to_end_in_a_few_steps(tmp_path, monkeypatch):
    """Both stages on a few steps (the shipped recipe's code path), seeded: the same seed gives the same weights."""
    monkeypatch.setattr(latent_teacher, "QUALITY_SAMPLES", 10)
    monkeypatch.setattr(latent_teacher, "GRID_PER_CLASS", 1)
    monkeypatch.setattr(latent_teacher, "DDIM_STEPS", 2)
    first = make_autoencoder(tmp_path / "ae", steps=3, progress=False)
    again = make_autoencoder(tmp_path / "ae-again", steps=3, progress=False)
    assert first["scaling_factor"] == again["scaling_factor"] and first["final_mse"] == again["final_mse"]
    manifest = make_latent_teacher(tmp_path / "ae", tmp_path / "teacher", steps=2, progress=False)
    assert check_latent_teacher(tmp_path / "teacher")["unet_training"]["steps"] == 2
    assert manifest["quality"]["samples"]["n"] == 10 and 0 <= manifest["quality"]["samples"]["class_accuracy"] <= 1
    model = load_model(str(tmp_path / "teacher"))
    assert model.autoencoder.config.scaling_factor == pytest.approx(first["scaling_factor"])


def test_recipe_errors_are_one_line(tmp_path):
    with pytest.raises(SystemExit, match="error: no trained autoencoder in"):
        main(["unet", "--autoencoder", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("not yours")
    with pytest.raises(SystemExit, match="error: .*not empty"):
        main(["autoencoder", "--out", str(tmp_path / "full"), "--steps", "1"])
