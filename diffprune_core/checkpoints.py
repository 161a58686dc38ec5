"""Loading U-Nets, and saving pruned ones without pickle: safetensors weights plus JSON.

A saved folder holds ``config.json`` (the diffusers config of the *unpruned* base model),
``diffusion_pytorch_model.safetensors`` and ``widths.json`` (the width of every convolution, linear
and normalisation layer, plus any LD-Pruner operator modifications). A dense model saved this way
is an ordinary diffusers folder: ``UNet2DModel.from_pretrained`` loads it too.
"""
import json
import re
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel, UNet2DModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .architectures import UNET_CLASSES, build_paper_unet
from .errors import InputError
from .fileio import atomic_dir, write_json
from .pruner import fix_stale_attributes

CONFIG = "config.json"
WEIGHTS = "diffusion_pytorch_model.safetensors"
WIDTHS = "widths.json"
WIDTHS_FORMAT = "diffprune-widths/1"
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def layer_widths(model) -> dict:
    """{module name: [in, out]} for convs and linears, [channels] for GroupNorm and LayerNorm."""
    widths = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            widths[name] = [module.in_channels, module.out_channels]
        elif isinstance(module, nn.Linear):
            widths[name] = [module.in_features, module.out_features]
        elif isinstance(module, nn.GroupNorm):
            widths[name] = [module.num_channels]
        elif isinstance(module, nn.LayerNorm):
            widths[name] = [module.normalized_shape[0]]
    return widths


def resize_to_widths(model, widths: dict) -> None:
    """Give every layer the recorded width, with uninitialised weights (they are loaded next)."""
    modules = dict(model.named_modules())
    for name, width in widths.items():
        module = modules.get(name)
        if module is None:
            raise InputError(f"{WIDTHS} names a layer {name!r} that the base model does not have")
        if isinstance(module, nn.Conv2d):
            module.in_channels, module.out_channels = width
            kernel = module.weight.shape[2:]
            module.weight = nn.Parameter(torch.empty(width[1], width[0] // module.groups, *kernel))
        elif isinstance(module, nn.Linear):
            module.in_features, module.out_features = width
            module.weight = nn.Parameter(torch.empty(width[1], width[0]))
        elif isinstance(module, nn.GroupNorm):
            module.num_channels = width[0]
        elif isinstance(module, nn.LayerNorm):
            module.normalized_shape = (width[0],)
        else:
            raise InputError(f"{WIDTHS} gives a width for {name!r}, which is not a conv, linear or norm layer")
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
            module.bias = nn.Parameter(torch.empty(module.weight.shape[0]))
        elif isinstance(module, (nn.GroupNorm, nn.LayerNorm)) and module.weight is not None:
            module.weight = nn.Parameter(torch.empty(width[0]))
            if module.bias is not None:
                module.bias = nn.Parameter(torch.empty(width[0]))


def write_unet(model, folder) -> None:
    """Write config.json, the safetensors weights and widths.json into an existing ``folder``."""
    folder = Path(folder)
    model.save_config(folder)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, folder / WEIGHTS, metadata={"format": "pt"})
    write_json(folder / WIDTHS, {
        "format": WIDTHS_FORMAT,
        "class": type(model).__name__,
        "operator_modifications": list(getattr(model, "diffprune_modifications", [])),
        "layers": layer_widths(model),
    })


def save_unet(model, out_dir) -> Path:
    """Save ``model`` (pruned or not) to a new folder ``out_dir``, atomically."""
    with atomic_dir(out_dir) as tmp:
        write_unet(model, tmp)
    return Path(out_dir)


def load_unet(source: str):
    """A U-Net from ``paper:NAME``, a folder saved by :func:`save_unet`, a diffusers folder, or a hub id.

    Hub ids (e.g. ``google/ddpm-cifar10-32``) go through diffusers' own loader, safetensors only.
    """
    if source.startswith("paper:"):
        return build_paper_unet(source.removeprefix("paper:"))
    path = Path(source)
    if path.is_dir():
        if (path / WIDTHS).is_file():
            return _load_pruned(path)
        if (path / CONFIG).is_file():
            return _from_pretrained(path)
        if (path / "unet" / CONFIG).is_file():
            return _from_pretrained(path / "unet")
        raise InputError(f"{path} holds no {CONFIG} (nor unet/{CONFIG}): not a diffusers U-Net folder")
    if path.exists():
        raise InputError(f"{path} is a file; give the folder that holds {CONFIG}")
    if HUB_ID.match(source) and not source.startswith("."):
        return _from_pretrained(source)
    raise InputError(f"no such model folder: {source}")


def _read_config(path: Path) -> dict:
    try:
        config = json.loads((path / CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read {path / CONFIG}: {err}") from None
    cls = config.get("_class_name")
    if cls not in UNET_CLASSES:
        raise InputError(f"{path / CONFIG} describes a {cls!r}, not one of {sorted(UNET_CLASSES)}")
    return config


def _from_pretrained(source):
    """diffusers' loader for a local folder or a hub id, refusing pickled (.bin) weights."""
    if isinstance(source, Path):
        classes = [UNET_CLASSES[_read_config(source)["_class_name"]]]
    else:
        classes = [UNet2DModel, UNet2DConditionModel]
    errors = []
    for cls in classes:
        for subfolder in (None, "unet"):
            try:
                return cls.from_pretrained(source, subfolder=subfolder, use_safetensors=True).eval()
            except Exception as err:  # diffusers raises OSError, ValueError, EnvironmentError, SafetensorError...
                errors.append(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    raise InputError(f"cannot load a U-Net from {source} ({errors[0]})")


def _load_pruned(path: Path):
    config = _read_config(path)
    try:
        spec = json.loads((path / WIDTHS).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read {path / WIDTHS}: {err}") from None
    if spec.get("format") != WIDTHS_FORMAT:
        raise InputError(f"{path / WIDTHS} is not a {WIDTHS_FORMAT} file")
    cls = UNET_CLASSES[config["_class_name"]]
    model = cls.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    if spec["operator_modifications"]:
        from .ldpruner import apply_modifications
        apply_modifications(model, [tuple(m) for m in spec["operator_modifications"]])
    resize_to_widths(model, spec["layers"])
    fix_stale_attributes(model)
    try:
        state = load_file(path / WEIGHTS)
    except (OSError, SafetensorError) as err:
        raise InputError(f"cannot read weights {path / WEIGHTS}: {err}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise InputError(f"weights in {path} do not fit {WIDTHS}: {str(err).splitlines()[0]}") from None
    return model.eval()
