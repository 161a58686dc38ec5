"""The shipped teacher in data/teacher is the one its manifest describes."""
import hashlib
import json

import pandas as pd
import pytest
import torch
from diffusers import UNet2DModel

from diffprune_core.architectures import DATA_DIR
from diffprune_core.complexity import count_params
from diffprune_core.teacher import TEACHER_UNET_KWARGS, WEIGHTS, main

TEACHER_DIR = DATA_DIR / "teacher"
MANIFEST = json.loads((TEACHER_DIR / "manifest.json").read_text())


def test_weights_match_the_manifest_sha256():
    assert MANIFEST["weights"] == WEIGHTS
    assert hashlib.sha256((TEACHER_DIR / WEIGHTS).read_bytes()).hexdigest() == MANIFEST["sha256"]


def test_loads_with_diffusers_in_the_documented_shape():
    model = UNet2DModel.from_pretrained(TEACHER_DIR, use_safetensors=True)
    for key, value in TEACHER_UNET_KWARGS.items():
        assert model.config[key] == (list(value) if isinstance(value, tuple) else value), key
    assert count_params(model) == MANIFEST["params"]
    groups = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert {m.num_groups for m in groups} == {4}
    widths = {m.num_channels: m.num_channels // m.num_groups for m in groups if m.num_channels in (16, 32)}
    assert widths == {16: 4, 32: 8}  # channels per group, as 128/32 and 256/32 in the paper's CIFAR-10 U-Net
    with torch.no_grad():
        eps = model(torch.zeros(2, 1, 16, 16), torch.tensor([10, 900])).sample
    assert eps.shape == (2, 1, 16, 16) and torch.isfinite(eps).all()


def test_manifest_records_the_recipe_and_its_results():
    assert MANIFEST["recipe"] == (f"python -m diffprune_core.teacher --out data/teacher "
                                  f"--steps {MANIFEST['steps']} --seed {MANIFEST['seed']}")
    losses = pd.read_csv(TEACHER_DIR / "loss.csv")
    assert losses["step"].tolist() == list(range(1, MANIFEST["steps"] + 1))
    assert MANIFEST["final_loss"] == pytest.approx(losses["loss"].tail(MANIFEST["training"]["final_loss_steps"]).mean())
    quality = MANIFEST["quality"]["samples"]
    assert quality["n"] == 1000 and sum(quality["class_histogram"]) == 1000
    assert quality["fid_label"] == "FID (digits features)"
    assert (TEACHER_DIR / "samples.png").is_file() and (TEACHER_DIR / "loss.png").is_file()


def test_recipe_refuses_an_existing_output_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("not yours")
    with pytest.raises(SystemExit, match="error: .*not empty"):
        main(["--out", str(tmp_path), "--steps", "1"])
