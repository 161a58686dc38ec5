"""Training and reference images by name: N x C x H x W float32 tensors in [-1, 1].

- ``digits`` (the default): scikit-learn's 1,797 real 8x8 handwritten digits, shipped inside
  scikit-learn, so the whole pipeline runs offline.
- ``cifar10`` or ``cifar10:ROOT``: torchvision's CIFAR-10 train split, already on disk under ROOT
  (default ``data/cifar10``); nothing is downloaded.
- ``folder:PATH``: every image file under PATH (recursively), center-cropped to a square.

Channels: ``channels`` must be 1 (grayscale) or 3 (RGB). A grayscale source asked for 3 channels is
repeated into R = G = B; a colour source asked for 1 channel becomes its luminance
(L = 0.299 R + 0.587 G + 0.114 B, as PIL and torchvision compute it); an alpha channel is dropped.
Resizing is bilinear with antialiasing; pixel values v in [0, 1] map to 2 v - 1.
"""
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.functional import rgb_to_grayscale

from .errors import InputError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DATASETS = ("digits", "cifar10", "cifar10:ROOT", "folder:PATH")
IMAGE_SUFFIXES = {suffix for suffix, format in Image.registered_extensions().items() if format in Image.OPEN}


def load_images(name: str = "digits", *, image_size: int, channels: int, limit: int | None = None,
                seed: int = 0) -> torch.Tensor:
    """Images of dataset ``name`` (see the module docstring) as float32 N x C x H x W in [-1, 1].

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


def to_model_range(pixels: torch.Tensor, image_size: int, channels: int) -> torch.Tensor:
    """N x C x H x W pixels in [0, 1] -> ``channels`` x ``image_size``^2 in [-1, 1] (antialiased bilinear)."""
    if pixels.shape[1] == 3 and channels == 1:
        pixels = rgb_to_grayscale(pixels)
    if pixels.shape[-2:] != (image_size, image_size):
        pixels = F.interpolate(pixels, size=(image_size, image_size), mode="bilinear", antialias=True,
                               align_corners=False)
    pixels = pixels.expand(-1, channels, -1, -1)
    return (pixels.clamp(0, 1) * 2 - 1).float().contiguous()


def load_digits(image_size: int, channels: int, limit: int | None, seed: int) -> torch.Tensor:
    """scikit-learn's digits: 1,797 grayscale 8x8 images with intensities 0..16."""
    from sklearn.datasets import load_digits as sklearn_digits

    images = torch.from_numpy(sklearn_digits().images).float()
    return to_model_range(images[subset_indices(len(images), limit, seed)].unsqueeze(1) / 16, image_size, channels)


def load_cifar10(root: Path, image_size: int, channels: int, limit: int | None, seed: int) -> torch.Tensor:
    """The 50,000 CIFAR-10 training images (32x32 RGB) from torchvision's files under ``root``."""
    from torchvision.datasets import CIFAR10

    try:
        dataset = CIFAR10(str(root), train=True, download=False)
    except RuntimeError:
        raise InputError(f"CIFAR-10 not found under {root} (expected {root / 'cifar-10-batches-py'}); download it "
                         f"once with torchvision.datasets.CIFAR10({str(root)!r}, download=True)") from None
    images = torch.from_numpy(dataset.data)[subset_indices(len(dataset.data), limit, seed)]
    return to_model_range(images.permute(0, 3, 1, 2).float() / 255, image_size, channels)


def load_folder(folder: Path, image_size: int, channels: int, limit: int | None, seed: int) -> torch.Tensor:
    """Every image file under ``folder`` (sorted paths), converted to L or RGB and center-cropped to a square."""
    if not folder.is_dir():
        raise InputError(f"image folder {folder} does not exist or is not a folder")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise InputError(f"image folder {folder} holds no image files (.png, .jpg, ... as PIL opens them)")
    images = [read_image(paths[i], image_size, channels) for i in subset_indices(len(paths), limit, seed)]
    return to_model_range(torch.from_numpy(np.stack(images)).float() / 255, image_size, channels)


def read_image(path: Path, image_size: int, channels: int) -> np.ndarray:
    """One image file as a C x H x W uint8 array: L or RGB, center-cropped and resized to ``image_size``."""
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
    except (OSError, ValueError, SyntaxError) as error:
        raise InputError(f"cannot read image {path}: {error}") from None
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(image).reshape(image_size, image_size, channels).transpose(2, 0, 1)
