"""FID (Heusel et al., 2017) through torch-fidelity, with two feature extractors that are never confused.

- ``inception``: torch-fidelity's Inception-v3, the paper's FID (Section 5.1), labelled
  "FID (Inception-v3)". Its weights are never downloaded here: pass the path of torch-fidelity's
  weights-inception-2015-12-05-6726825d.pth on disk.
- ``digits`` (the default): the penultimate features of the shipped digits classifier
  (:mod:`diffprune_core.digits_classifier`), labelled "FID (digits features)". Its values are on
  another scale from Inception FID and must not be compared with the paper's numbers.

The statistics of the reference set are cached under ``cache_dir``, named after the reference,
its image size, image count and a hash of its pixels, so a changed set is never read
from a stale cache.
"""
import hashlib
import re
from pathlib import Path

import torch
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from .data import load_images
from .digits_classifier import classifier_info, load_classifier, to_classifier_input
from .errors import InputError

EXTRACTORS = {"digits": "FID (digits features)", "inception": "FID (Inception-v3)"}
CACHE_DIR = Path.home() / ".cache" / "diffprune" / "fid"
INCEPTION_WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                         "weights-inception-2015-12-05-6726825d.pth")


class Uint8Images(Dataset):
    """Images in [-1, 1] as torch-fidelity reads them: 3 x H x W uint8 (grayscale repeated to RGB)."""

    def __init__(self, images: torch.Tensor):
        pixels = ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        self.pixels = pixels.expand(-1, 3, -1, -1).contiguous()

    def __len__(self):
        return len(self.pixels)

    def __getitem__(self, index):
        return self.pixels[index]


class DigitsFeatures(FeatureExtractorBase):
    """The digits classifier's penultimate layer as a torch-fidelity feature extractor (uint8 B x 3 x H x W in)."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        self.classifier = load_classifier()

    @staticmethod
    def get_provided_features_list():
        return ("features",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "features"

    @staticmethod
    def can_be_compiled():
        return False

    def forward(self, pixels):
        return (self.classifier.features(to_classifier_input(pixels.float() / 127.5 - 1)),)


def digits_extractor_name() -> str:
    """Register the digits extractor under a name holding the classifier's sha256, so caches follow the weights."""
    name = f"diffprune-digits-{classifier_info()['sha256'][:12]}"
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor(name, DigitsFeatures)
    return name


def extractor_arguments(extractor: str, inception_weights) -> dict:
    if extractor == "digits":
        return {"feature_extractor": digits_extractor_name()}
    if extractor != "inception":
        raise InputError(f"unknown FID extractor {extractor!r}; choose from {', '.join(EXTRACTORS)}")
    if inception_weights is None or not Path(inception_weights).is_file():
        raise InputError(f"Inception FID needs torch-fidelity's Inception-v3 weights on disk: download "
                         f"{INCEPTION_WEIGHTS_URL} once and pass its path as inception_weights (got {inception_weights})")
    return {"feature_extractor": "inception-v3-compat", "feature_extractor_weights_path": str(inception_weights)}


def reference_cache_name(name: str, images: Uint8Images) -> str:
    """'<name>-<size>px-<count>-<pixel hash>', safe as a file name."""
    pixels = images.pixels
    digest = hashlib.sha256(pixels.numpy().tobytes()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9_.]+", "_", name).strip("_")
    return f"{slug}-{pixels.shape[-1]}px-{len(pixels)}-{digest}"


def fid(samples: torch.Tensor, reference: torch.Tensor | str, *, extractor: str = "digits", inception_weights=None,
        cache_dir=CACHE_DIR, reference_name: str | None = None, batch_size: int = 64) -> dict:
    """FID between ``samples`` and ``reference`` (images in [-1, 1], or a dataset name for :func:`load_images`).

    Returns {'label', 'value', 'extractor', 'n_samples', 'n_reference', 'reference'}.
    """
    if samples.ndim != 4 or samples.shape[1] not in (1, 3) or len(samples) < 2:
        raise InputError(f"FID needs at least two N x C x H x W samples with 1 or 3 channels, got {tuple(samples.shape)}")
    arguments = extractor_arguments(extractor, inception_weights)
    if isinstance(reference, str):
        reference_name = reference_name or reference
        reference = load_images(reference, image_size=samples.shape[-1], channels=samples.shape[1])
    if reference.ndim != 4 or reference.shape[1] not in (1, 3) or len(reference) < 2:
        raise InputError(f"FID needs at least two N x C x H x W reference images, got {tuple(reference.shape)}")
    reference_images = Uint8Images(reference)
    cache_name = reference_cache_name(reference_name or "reference", reference_images)
    metrics = torch_fidelity.calculate_metrics(
        input1=Uint8Images(samples), input2=reference_images, input2_cache_name=cache_name, cache_root=str(cache_dir),
        fid=True, batch_size=batch_size, cuda=torch.cuda.is_available(), verbose=False,
        save_cpu_ram=True, **arguments)  # save_cpu_ram: no loader worker processes for images already in memory
    return {"label": EXTRACTORS[extractor], "value": metrics["frechet_inception_distance"], "extractor": extractor,
            "n_samples": len(samples), "n_reference": len(reference), "reference": cache_name}
