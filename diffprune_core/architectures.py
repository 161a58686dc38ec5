"""The paper's four U-Net shapes, built with random weights, and example inputs for any U-Net.

The constructor arguments live in ``data/paper_unet_configs.json``: CIFAR-10 32, CelebA-HQ 64,
LSUN 256 (Church and Bedroom share it) and the ImageNet LDM U-Net of Tables 1-3. No weights are
needed to check the paper's #Params and MACs columns: they depend on the shapes alone.
"""
import json
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel, UNet2DModel

from .errors import InputError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
UNET_CLASSES = {"UNet2DModel": UNet2DModel, "UNet2DConditionModel": UNet2DConditionModel}


def paper_unet_configs() -> dict:
    """The paper's U-Nets by name: class, constructor kwargs, and the paper's dense #Params/MACs."""
    configs = json.loads((DATA_DIR / "paper_unet_configs.json").read_text())
    return {name: entry for name, entry in configs.items() if not name.startswith("_")}


def build_paper_unet(name: str, seed: int = 0):
    """A randomly initialised U-Net with the shape of the paper's model ``name``."""
    configs = paper_unet_configs()
    if name not in configs:
        raise InputError(f"unknown paper U-Net {name!r}; choose from {sorted(configs)}")
    entry = configs[name]
    torch.manual_seed(seed)
    return UNET_CLASSES[entry["class"]](**entry["kwargs"]).eval()


def example_inputs(model, batch_size: int = 1, timestep: int = 1) -> dict:
    """Keyword inputs for one forward pass of ``model`` (sample, timestep, and text states if any)."""
    cfg = model.config
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    device = next(model.parameters()).device
    inputs = {
        "sample": torch.randn(batch_size, cfg.in_channels, size, size, device=device),
        "timestep": torch.full((batch_size,), timestep, dtype=torch.long, device=device),
    }
    if isinstance(model, UNet2DConditionModel):
        inputs["encoder_hidden_states"] = torch.randn(batch_size, 1, cfg.cross_attention_dim, device=device)
    return inputs
