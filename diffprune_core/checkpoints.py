"""Loading diffusion models, and saving pruned ones without pickle: safetensors weights plus JSON.

A saved U-Net folder holds ``config.json`` (the diffusers config of the *unpruned* base model),
``diffusion_pytorch_model.safetensors`` and ``widths.json`` (the width of every convolution, linear
and normalisation layer, plus any LD-Pruner operator modifications). A dense model saved this way
is an ordinary diffusers folder: ``UNet2DModel.from_pretrained`` loads it too.

A model that came as a pipeline folder (``model_index.json``: diffusers' DDPMPipeline, DDIMPipeline,
LDMPipeline, StableDiffusionPipeline, and diffprune's ClassLDMPipeline) is saved as one again: the pruned
``unet/`` as above, the untouched autoencoder, text encoder and tokenizer and the fine-tuned class embedder
re-saved with safetensors, the scheduler config as it
was, and ``model_index.json`` (components diffprune does not use, such as the safety checker, are left
out as null). diffusers' own ``DiffusionPipeline.from_pretrained(folder, unet=load_unet(folder))`` loads
it: the pruned U-Net is the one component whose widths diffusers cannot apply itself.
"""
import json
import re
from contextlib import contextmanager
from pathlib import Path

import diffusers
import torch
from diffusers import AutoencoderKL, VQModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .architectures import UNET_CLASSES, build_paper_unet
from .errors import InputError
from .fileio import atomic_dir, write_json
from .pipeline import AUTOENCODER_COMPONENTS, PIPELINE_COMPONENTS, ClassEmbedder, DiffusionModel, noise_scheduler
from .pruner import fix_stale_attributes

CONFIG = "config.json"
MODEL_INDEX = "model_index.json"
SCHEDULER_CONFIG = "scheduler_config.json"
AUTOENCODER_CLASSES = {"VQModel": VQModel, "AutoencoderKL": AutoencoderKL}
TEXT_CLASSES = {"text_encoder": ("CLIPTextModel",), "tokenizer": ("CLIPTokenizer", "CLIPTokenizerFast")}
HUB_FILES = ["*.json", "*.safetensors", "*.txt"]  # what a hub snapshot brings: configs, weights, the tokenizer's vocabulary
WEIGHTS = "diffusion_pytorch_model.safetensors"
WIDTHS = "widths.json"
WIDTHS_FORMAT = "diffprune-widths/1"
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def layer_widths(model) -> dict:
    """{module name: [in, out]} for convs and linears, [num, dim] for embeddings, [channels] for GroupNorm and LayerNorm."""
    widths = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            widths[name] = [module.in_channels, module.out_channels]
        elif isinstance(module, nn.Linear):
            widths[name] = [module.in_features, module.out_features]
        elif isinstance(module, nn.Embedding):
            widths[name] = [module.num_embeddings, module.embedding_dim]
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
        elif isinstance(module, nn.Embedding):
            module.num_embeddings, module.embedding_dim = width
            module.weight = nn.Parameter(torch.empty(*width))
        elif isinstance(module, nn.GroupNorm):
            module.num_channels = width[0]
        elif isinstance(module, nn.LayerNorm):
            module.normalized_shape = (width[0],)
        else:
            raise InputError(f"{WIDTHS} gives a width for {name!r}, which is not a conv, linear, embedding or norm layer")
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
    """Save a U-Net (pruned or not) to a new folder ``out_dir``, atomically."""
    with atomic_dir(out_dir) as tmp:
        write_unet(model, tmp)
    return Path(out_dir)


def write_model(model: DiffusionModel, folder) -> None:
    """Write ``model`` into an existing empty ``folder``: a bare U-Net folder, or a pipeline folder (module doc)."""
    folder = Path(folder)
    if model.pipeline is None:
        write_unet(model.unet, folder)
        return
    index = {"_class_name": model.pipeline, "_diffusers_version": diffusers.__version__}
    for name, module in model.components().items():
        library = "diffprune_core.pipeline" if isinstance(module, ClassEmbedder) else type(module).__module__.split(".")[0]
        index[name] = [library, type(module).__name__]
        (folder / name).mkdir()
        if name == "unet":
            write_unet(module, folder / name)
        else:
            with quiet_transformers():
                module.save_pretrained(folder / name, safe_serialization=True)
    if model.tokenizer is not None:
        index["tokenizer"] = ["transformers", type(model.tokenizer).__name__]
        model.tokenizer.save_pretrained(folder / "tokenizer")
    index["scheduler"] = ["diffusers", model.scheduler_config["_class_name"]]
    (folder / "scheduler").mkdir()
    write_json(folder / "scheduler" / SCHEDULER_CONFIG, model.scheduler_config)
    if model.pipeline == "StableDiffusionPipeline":
        index |= {"safety_checker": [None, None], "feature_extractor": [None, None], "requires_safety_checker": False}
    write_json(folder / MODEL_INDEX, index)


def save_model(model: DiffusionModel, out_dir) -> Path:
    """Save a DiffusionModel to a new folder ``out_dir``, atomically (a pipeline folder if it came as one)."""
    with atomic_dir(out_dir) as tmp:
        write_model(model, tmp)
    return Path(out_dir)


def load_unet(source: str):
    """The U-Net of :func:`load_model` (a pipeline's ``unet/``)."""
    return load_model(source).unet


def load_model(source: str) -> DiffusionModel:
    """A DiffusionModel from ``paper:NAME``, a pipeline folder (``model_index.json``), a U-Net folder (saved by
    diffprune or diffusers), or a hub id (its safetensors and JSON files only).
    """
    if source.startswith("paper:"):
        return DiffusionModel(unet=build_paper_unet(source.removeprefix("paper:")))
    path = Path(source)
    if not path.exists() and HUB_ID.match(source) and not source.startswith("."):
        path = _download(source)
    if path.is_dir():
        if (path / MODEL_INDEX).is_file():
            return _load_pipeline(path)
        if (path / CONFIG).is_file():
            return DiffusionModel(unet=_load_unet_folder(path))
        if (path / "unet" / CONFIG).is_file():
            raise InputError(f"{path} has a unet/ folder but no {MODEL_INDEX}: give {path / 'unet'} for the U-Net alone")
        raise InputError(f"{path} holds neither {MODEL_INDEX} nor {CONFIG}: not a diffusers pipeline or U-Net folder")
    if path.exists():
        raise InputError(f"{path} is a file; give the folder that holds {MODEL_INDEX} or {CONFIG}")
    raise InputError(f"no such model folder: {source}")


def _download(repo_id: str) -> Path:
    """The hub repository's configs, safetensors weights and vocabulary files, in the local hub cache."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as err:  # offline, unknown repository, gated model...: one line, whatever the cause
        raise InputError(f"cannot fetch {repo_id} from the hub ({first_line(err)})") from None


def first_line(err: Exception) -> str:
    """An exception from diffusers, transformers or the hub as one line: its type and first line."""
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def _load_unet_folder(path: Path):
    return _load_pruned(path) if (path / WIDTHS).is_file() else _from_pretrained(path)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read {path}: {err}") from None


def _load_pipeline(path: Path) -> DiffusionModel:
    """The components diffprune uses from a pipeline folder; a missing or unexpected one is a one-line error."""
    index = _read_json(path / MODEL_INDEX)
    pipeline = index.get("_class_name")
    if pipeline not in PIPELINE_COMPONENTS:
        raise InputError(f"{path} holds a {pipeline!r}; diffprune reads {', '.join(PIPELINE_COMPONENTS)}")
    for name in PIPELINE_COMPONENTS[pipeline]:
        entry = index.get(name) or [None, None]
        if entry[1] is None or not (path / name).is_dir():
            raise InputError(f"pipeline folder {path} ({pipeline}) misses its {name}/ component "
                             f"(a {pipeline} needs {', '.join(PIPELINE_COMPONENTS[pipeline])})")
    scheduler_config = _read_json(path / "scheduler" / SCHEDULER_CONFIG)
    latent = any(name in PIPELINE_COMPONENTS[pipeline] for name in AUTOENCODER_COMPONENTS)
    schedule = noise_scheduler({"clip_sample": not latent, **scheduler_config})  # latents are not clipped
    model = DiffusionModel(unet=_load_unet_folder(path / "unet"), schedule=schedule, pipeline=pipeline,
                           scheduler_config=scheduler_config)
    for name in AUTOENCODER_COMPONENTS:
        if name in PIPELINE_COMPONENTS[pipeline]:
            model.autoencoder = _from_pretrained_component(path, name, index[name][1], AUTOENCODER_CLASSES)
    if "class_embedder" in PIPELINE_COMPONENTS[pipeline]:
        model.class_embedder = _from_pretrained_component(path, "class_embedder", index["class_embedder"][1],
                                                          {"ClassEmbedder": ClassEmbedder})
    if "text_encoder" in PIPELINE_COMPONENTS[pipeline]:
        import transformers

        classes = {kind: {cls: getattr(transformers, cls) for cls in allowed} for kind, allowed in TEXT_CLASSES.items()}
        model.text_encoder = _from_pretrained_component(path, "text_encoder", index["text_encoder"][1],
                                                        classes["text_encoder"])
        model.tokenizer = _from_pretrained_component(path, "tokenizer", index["tokenizer"][1], classes["tokenizer"])
    if model.autoencoder is not None and model.autoencoder.config.latent_channels != model.unet.config.in_channels:
        raise InputError(f"{path}: the autoencoder makes {model.autoencoder.config.latent_channels}-channel latents, "
                         f"the U-Net takes {model.unet.config.in_channels} channels")
    return model


@contextmanager
def quiet_transformers():
    """Without transformers' progress bars for loading and writing a component (a flood on tiny models)."""
    from transformers.utils import logging as transformers_logging

    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            transformers_logging.enable_progress_bar()


def _from_pretrained_component(path: Path, name: str, cls_name: str, classes: dict):
    """One component by its model_index class, safetensors only."""
    if cls_name not in classes:
        raise InputError(f"{path / name} is a {cls_name}; diffprune reads {', '.join(classes)} there")
    cls = classes[cls_name]
    try:
        with quiet_transformers():
            if name == "tokenizer":
                return cls.from_pretrained(path / name)
            return cls.from_pretrained(path / name, use_safetensors=True).eval()
    except Exception as err:  # diffusers and transformers raise OSError, ValueError, EnvironmentError, ...
        raise InputError(f"cannot load {path / name} ({first_line(err)})") from None


def _read_config(path: Path) -> dict:
    config = _read_json(path / CONFIG)
    cls = config.get("_class_name")
    if cls not in UNET_CLASSES:
        raise InputError(f"{path / CONFIG} describes a {cls!r}, not one of {sorted(UNET_CLASSES)}")
    return config


def _from_pretrained(path: Path):
    """diffusers' loader for a local U-Net folder, refusing pickled (.bin) weights."""
    cls = UNET_CLASSES[_read_config(path)["_class_name"]]
    try:
        return cls.from_pretrained(path, use_safetensors=True).eval()
    except Exception as err:  # diffusers raises OSError, ValueError, EnvironmentError, SafetensorError...
        raise InputError(f"cannot load a U-Net from {path} ({first_line(err)})") from None


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
