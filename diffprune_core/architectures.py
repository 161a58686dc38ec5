"""The paper's four U-Net shapes (and public text-to-image ones), built with random weights; example inputs.

The constructor arguments live in ``data/paper_unet_configs.json``: CIFAR-10 32, CelebA-HQ 64,
LSUN 256 (Church and Bedroom share it) and the ImageNet LDM U-Net of Tables 1-3. No weights are
needed to check the paper's #Params and MACs columns: they depend on the shapes alone.
"""
import json
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel, UNet2DModel

from .errors import InputError
from .pipeline import as_diffusion_model, to_device

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
UNET_CLASSES = {"UNet2DModel": UNet2DModel, "UNet2DConditionModel": UNet2DConditionModel}


def paper_unet_configs() -> dict:
    """The paper's U-Nets by name: class, constructor kwargs, and the paper's dense #Params/MACs."""
    configs = json.loads((DATA_DIR / "paper_unet_configs.json").read_text())
    return {name: entry for name, entry in configs.items() if not name.startswith("_")}


def build_paper_unet(name: str, seed: int = 0):
    """A randomly initialised U-Net with the shape of the paper's model ``name``."""
    return build_unet(paper_unet_configs(), name, seed)


def hub_unet_configs() -> dict:
    """U-Nets of public checkpoints beyond the paper (Stable Diffusion v1.4, SDXL): class, kwargs, published
    #Params and the text encoder's token count, from ``data/hub_unet_configs.json``."""
    configs = json.loads((DATA_DIR / "hub_unet_configs.json").read_text())
    return {name: entry for name, entry in configs.items() if not name.startswith("_")}


def build_hub_unet(name: str, seed: int = 0):
    """A randomly initialised U-Net with the shape of the public checkpoint ``name`` (see hub_unet_configs)."""
    return build_unet(hub_unet_configs(), name, seed)


def build_unet(configs: dict, name: str, seed: int):
    if name not in configs:
        raise InputError(f"unknown U-Net shape {name!r}; choose from {sorted(configs)}")
    entry = configs[name]
    torch.manual_seed(seed)
    return UNET_CLASSES[entry["class"]](**entry["kwargs"]).eval()


def example_inputs(model, batch_size: int = 1, timestep: int = 1, tokens: int | None = None) -> dict:
    """Keyword inputs for one forward pass of a U-Net (or of a DiffusionModel's U-Net): a random sample,
    the timestep, and the model's default conditions (class labels, encoder states, SDXL's added inputs).

    ``tokens`` gives a bare conditional U-Net null encoder states of that length (77 for a CLIP text
    encoder: the cross-attention of a text-to-image sampling step) instead of one token.
    """
    model = as_diffusion_model(model)
    device = model.device
    conditions, _ = model.conditions(batch_size, seed=0)
    if tokens is not None and "encoder_hidden_states" in conditions:
        states = conditions["encoder_hidden_states"]
        conditions["encoder_hidden_states"] = states.new_zeros(batch_size, tokens, states.shape[-1])
    return {"sample": torch.randn(batch_size, *model.latent_shape, device=device),
            "timestep": torch.full((batch_size,), timestep, dtype=torch.long, device=device),
            **to_device(conditions, device)}
