"""Training and reference images by name: N x C x H x W float32 tensors in [-1, 1], with their labels or captions.

- ``digits`` (the default): scikit-learn's 1,797 real 8x8 handwritten digits (grayscale, labels 0-9),
  shipped inside scikit-learn, so the whole pipeline runs offline.
- ``cifar10`` or ``cifar10:ROOT``: torchvision's CIFAR-10 train split (RGB, labels 0-9), already on
  disk under ROOT (default ``data/cifar10``); nothing is downloaded.
- ``folder:PATH``: every image file under PATH (recursively), center-cropped to a square. Labels when
  every image sits in a sub-folder of PATH, one per class (torchvision's ImageFolder convention: class
  i is the i-th sub-folder name in sorted order); captions when PATH holds ``metadata.jsonl``, one
  JSON object a line with ``file_name`` and ``text`` (Hugging Face's imagefolder convention).

Channels: ``channels`` must be 1 (grayscale) or 3 (RGB) and must be the source's: grayscale images for
a 3-channel model, or colour images for a 1-channel model, are an error, never converted. An alpha
channel is dropped. Resizing is bilinear with antialiasing; pixel values v in [0, 1] map to 2 v - 1.
"""
import json
from dataclasses import dataclass

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import InputError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DATASETS = ("digits", "cifar10", "cifar10:ROOT", "folder:PATH")
IMAGE_SUFFIXES = {suffix for suffix, format in Image.registered_extensions().items() if format in Image.OPEN}
GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "F"}
METADATA = "metadata.jsonl"


@dataclass(frozen=True)
class Examples:
    """Images N x C x H x W in [-1, 1] and, where the dataset has them, their class labels or captions."""
    images: torch.Tensor
    labels: torch.Tensor | None = None
    captions: list | None = None

    def __len__(self):
        return len(self.images)

    def subset(self, indices) -> "Examples":
        indices = torch.as_tensor(indices)
        return Examples(self.images[indices], None if self.labels is None else self.labels[indices],
                        None if self.captions is None else [self.captions[i] for i in indices.tolist()])


def load_images(name: str = "digits", *, image_size: int, channels: int, limit: int | None = None,
                seed: int = 0) -> torch.Tensor:
    """The images of :func:`load_examples`."""
    return load_examples(name, image_size=image_size, channels=channels, limit=limit, seed=seed).images


def load_examples(name: str = "digits", *, image_size: int, channels: int, limit: int | None = None,
                  seed: int = 0) -> Examples:
    """Images of dataset ``name`` (see the module docstring) with their labels or captions.

    With ``limit``, a random subset of ``limit`` images chosen by ``seed``; without it, all images
    in the dataset's order.
    """
    check_image_shape(image_size, channels)
    if limit is not None and limit < 1:
        raise InputError(f"limit must be a positive number of images, got {limit}")
    kind, _, argument = name.partition(":")
    if kind == "digits" and not argument:
        return load_digits(image_size, channels, limit, seed)
    if kind == "cifar10":
        return load_cifar10(Path(argument) if argument else DATA_DIR / "cifar10", image_size, channels, limit, seed)
    if kind == "folder" and argument:
        return load_folder(Path(argument), image_size, channels, limit, seed)
    raise InputError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def check_dataset(name: str) -> None:
    """Fail early, reading no image, on a dataset name that :func:`load_examples` cannot read."""
    kind, _, argument = name.partition(":")
    if kind == "cifar10":
        root = Path(argument) if argument else DATA_DIR / "cifar10"
        if not (root / "cifar-10-batches-py").is_dir():
            raise InputError(f"CIFAR-10 not found under {root} (expected {root / 'cifar-10-batches-py'})")
    elif kind == "folder" and argument:
        if not Path(argument).is_dir():
            raise InputError(f"image folder {argument} does not exist or is not a folder")
    elif name != "digits":
        raise InputError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def check_channels(name: str, source_channels: int, channels: int) -> None:
    """Grayscale data for an RGB model, or the reverse, is an error: we never convert silently."""
    if source_channels != channels:
        kinds = {1: "grayscale (1 channel)", 3: "RGB (3 channels)"}
        raise InputError(f"{name} holds {kinds[source_channels]} images, but the model takes {kinds[channels]} ones")


def check_image_shape(image_size: int, channels: int) -> None:
    if image_size < 8 or image_size & (image_size - 1):
        raise InputError(f"image size must be a power of two of at least 8 (8, 16, 32, ...), got {image_size}")
    if channels not in (1, 3):
        raise InputError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")


def subset_indices(count: int, limit: int | None, seed: int) -> torch.Tensor:
    """All of range(count) in order, or ``limit`` of them drawn at random by ``seed``."""
    if limit is None or limit >= count:
        return torch.arange(count)
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:limit]


def to_model_range(pixels: torch.Tensor, image_size: int) -> torch.Tensor:
    """N x C x H x W pixels in [0, 1] -> C x ``image_size``^2 in [-1, 1] (antialiased bilinear)."""
    if pixels.shape[-2:] != (image_size, image_size):
        pixels = F.interpolate(pixels, size=(image_size, image_size), mode="bilinear", antialias=True,
                               align_corners=False)
    return (pixels.clamp(0, 1) * 2 - 1).float().contiguous()


def load_digits(image_size: int, channels: int, limit: int | None, seed: int) -> Examples:
    """scikit-learn's digits: 1,797 grayscale 8x8 images with intensities 0..16, labelled 0-9."""
    from sklearn.datasets import load_digits as sklearn_digits

    check_channels("digits", 1, channels)
    digits = sklearn_digits()
    indices = subset_indices(len(digits.images), limit, seed)
    images = torch.from_numpy(digits.images).float()[indices].unsqueeze(1) / 16
    return Examples(to_model_range(images, image_size), labels=torch.from_numpy(digits.target)[indices].long())


def load_cifar10(root: Path, image_size: int, channels: int, limit: int | None, seed: int) -> Examples:
    """The 50,000 CIFAR-10 training images (32x32 RGB, labels 0-9) from torchvision's files under ``root``."""
    from torchvision.datasets import CIFAR10

    check_channels("CIFAR-10", 3, channels)
    try:
        dataset = CIFAR10(str(root), train=True, download=False)
    except RuntimeError:
        raise InputError(f"CIFAR-10 not found under {root} (expected {root / 'cifar-10-batches-py'}); download it "
                         f"once with torchvision.datasets.CIFAR10({str(root)!r}, download=True)") from None
    indices = subset_indices(len(dataset.data), limit, seed)
    images = torch.from_numpy(dataset.data)[indices].permute(0, 3, 1, 2).float() / 255
    return Examples(to_model_range(images, image_size), labels=torch.as_tensor(dataset.targets)[indices].long())


def load_folder(folder: Path, image_size: int, channels: int, limit: int | None, seed: int) -> Examples:
    """Every image file under ``folder`` (sorted paths), center-cropped, with labels or captions (module doc)."""
    if not folder.is_dir():
        raise InputError(f"image folder {folder} does not exist or is not a folder")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise InputError(f"image folder {folder} holds no image files (.png, .jpg, ... as PIL opens them)")
    indices = subset_indices(len(paths), limit, seed).tolist()
    images = [read_image(paths[i], image_size, channels) for i in indices]
    pixels = torch.from_numpy(np.stack(images)).float() / 255
    labels, captions = folder_labels(folder, paths), folder_captions(folder, paths)
    return Examples(to_model_range(pixels, image_size),
                    labels=None if labels is None else labels[indices],
                    captions=None if captions is None else [captions[i] for i in indices])


def folder_labels(folder: Path, paths: list) -> torch.Tensor | None:
    """ImageFolder's labels (index of the first-level sub-folder, sorted by name), if every image has one."""
    parts = [path.relative_to(folder).parts for path in paths]
    if (folder / METADATA).exists() or any(len(p) < 2 for p in parts):
        return None
    classes = sorted({p[0] for p in parts})
    return torch.tensor([classes.index(p[0]) for p in parts])


def folder_captions(folder: Path, paths: list) -> list | None:
    """The ``text`` of each image in ``folder/metadata.jsonl`` (keyed by ``file_name``), if there is such a file."""
    metadata = folder / METADATA
    if not metadata.is_file():
        return None
    captions = {}
    for number, line in enumerate(metadata.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            captions[entry["file_name"]] = str(entry["text"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise InputError(f"{metadata}, line {number}: not a JSON object with file_name and text") from None
    names = [path.relative_to(folder).as_posix() for path in paths]
    missing = [name for name in names if name not in captions]
    if missing:
        raise InputError(f"{metadata} has no caption for {missing[0]} ({len(missing)} images without one)")
    return [captions[name] for name in names]


def read_image(path: Path, image_size: int, channels: int) -> np.ndarray:
    """One image file as a C x H x W uint8 array, center-cropped and resized to ``image_size``."""
    try:
        with Image.open(path) as image:
            check_channels(str(path), 1 if image.mode in GRAYSCALE_MODES else 3, channels)
            image = image.convert("L" if channels == 1 else "RGB")
    except (OSError, ValueError, SyntaxError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"cannot read image {path}: {error}") from None
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(image).reshape(image_size, image_size, channels).transpose(2, 0, 1)
