"""FID (Heusel et al., 2017) with torch-fidelity's feature extraction and formula, two extractors never confused.

- ``inception``: torch-fidelity's Inception-v3, the paper's FID (Section 5.1), labelled
  "FID (Inception-v3)". Its weights are never downloaded here: the user passes the path of
  torch-fidelity's weights-inception-2015-12-05-6726825d.pth. That file is a pickle, and
  torch-fidelity's own loader (``torch.load`` in FeatureExtractorInceptionV3) reads it; we hand it
  over only if its sha256 is the published one (:data:`INCEPTION_SHA256`).
- ``digits`` (the default): the penultimate features of the shipped digits classifier
  (:mod:`diffprune_core.digits_classifier`), labelled "FID (digits features)". Its values are on
  another scale from Inception FID and must not be compared with the paper's numbers.

FID = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)) over the features' means mu and
covariances S, by torch-fidelity's ``fid_features_to_statistics`` and ``fid_statistics_to_metric``.
The reference statistics are cached under ``cache_dir`` without pickle (torch-fidelity's own cache
uses torch.save/torch.load): ``<name>-<size>px-<count>-<pixel hash>-<extractor>.safetensors`` holds
mu and S, and the ``.json`` beside it the reference's identity (name, image size, channels, count,
sha256 of the pixels), the extractor's id and :func:`results.library_digest` of this module (the library
code it runs and the package versions). An entry is used only when its JSON names exactly that reference, extractor and
library, so a changed image set, classifier, library or torch-fidelity never reads stale statistics.
"""
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import torch
import torch_fidelity
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from .data import load_images
from .digits_classifier import classifier_info, load_classifier, to_classifier_input
from .errors import InputError
from .results import library_digest

EXTRACTORS = {"digits": "FID (digits features)", "inception": "FID (Inception-v3)"}
CACHE_DIR = Path.home() / ".cache" / "diffprune" / "fid"
STATISTICS_FORMAT = "diffprune-fid-statistics/1"
INCEPTION_WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                         "weights-inception-2015-12-05-6726825d.pth")
# The release file's sha256 (its name carries the first 8 digits, which torch.hub checks on download).
INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] as uint8 pixels round((x + 1) * 127.5), same shape."""
    return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


class Uint8Images(Dataset):
    """Images in [-1, 1] as torch-fidelity reads them: 3 x H x W uint8 (grayscale repeated to RGB)."""

    def __init__(self, images: torch.Tensor):
        self.pixels = to_uint8(images).expand(-1, 3, -1, -1).contiguous()

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


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def extractor_arguments(extractor: str, inception_weights=None) -> dict:
    """torch-fidelity's registry ``name`` of ``extractor``, its constructor ``kwargs``, and the ``id`` caches use.

    Checks the Inception weights file (present, the published sha256) before anything reads it.
    """
    if extractor == "digits":
        name = digits_extractor_name()
        return {"name": name, "kwargs": {}, "id": name}
    if extractor != "inception":
        raise InputError(f"unknown FID extractor {extractor!r}; choose from {', '.join(EXTRACTORS)}")
    if inception_weights is None or not Path(inception_weights).is_file():
        raise InputError(f"Inception FID needs torch-fidelity's Inception-v3 weights on disk: download "
                         f"{INCEPTION_WEIGHTS_URL} once and pass its path as inception_weights (got {inception_weights})")
    if sha256_of_file(Path(inception_weights)) != INCEPTION_SHA256:
        raise InputError(f"{inception_weights} is not torch-fidelity's Inception-v3 weights file (sha256 differs "
                         f"from {INCEPTION_SHA256}); download {INCEPTION_WEIGHTS_URL}")
    return {"name": "inception-v3-compat", "kwargs": {"feature_extractor_weights_path": str(inception_weights)},
            "id": f"inception-v3-compat-{INCEPTION_SHA256[:8]}"}


def build_extractor(arguments: dict) -> FeatureExtractorBase:
    """torch-fidelity's feature extractor, on the GPU when there is one."""
    layer = FEATURE_EXTRACTORS_REGISTRY[arguments["name"]].get_default_feature_layer_for_metric("fid")
    return create_feature_extractor(arguments["name"], [layer], cuda=torch.cuda.is_available(), verbose=False,
                                    **arguments["kwargs"])


def fid_statistics(images: torch.Tensor, extractor: FeatureExtractorBase, batch_size: int) -> dict:
    """{'mu', 'sigma'} (numpy) of the FID features of images in [-1, 1], by torch-fidelity."""
    features = get_featuresdict_from_dataset(Uint8Images(images), extractor, batch_size, cuda=torch.cuda.is_available(),
                                             save_cpu_ram=True, verbose=False)  # no loader workers: images in memory
    return fid_features_to_statistics(features[extractor.get_requested_features_list()[0]])


def reference_identity(name: str, images: torch.Tensor, extractor: str, extractor_id: str) -> dict:
    """What a cache entry must match: the reference (name, shape, count, sha256 of its uint8 pixels), the extractor
    and the library code that computes them (:func:`results.library_digest` of this module).

    'cache_name' is '<name>-<size>px-<count>-<pixel hash>', safe as a file name.
    """
    digest = hashlib.sha256(to_uint8(images).numpy().tobytes()).hexdigest()
    slug = re.sub(r"[^A-Za-z0-9_.]+", "_", name).strip("_")
    return {"format": STATISTICS_FORMAT, "cache_name": f"{slug}-{images.shape[-1]}px-{len(images)}-{digest[:12]}",
            "reference": name, "image_size": list(images.shape[-2:]), "channels": images.shape[1],
            "count": len(images), "pixels_sha256": digest, "extractor": extractor_id, "label": EXTRACTORS[extractor],
            "library": library_digest("fid")}


def write_atomically(path: Path, write) -> None:
    """``write(temporary path)``, then rename it to ``path``: readers never see half a file."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def cached_reference_statistics(images: torch.Tensor, identity: dict, extractor: FeatureExtractorBase,
                                batch_size: int, cache_dir) -> dict:
    """The reference's {'mu', 'sigma'}: read from ``cache_dir`` when its JSON matches ``identity``, else computed
    and written (safetensors first, the JSON last, so an entry with its JSON is complete)."""
    cache_dir = Path(cache_dir)
    stem = f"{identity['cache_name']}-{identity['extractor']}"
    statistics_path, identity_path = cache_dir / f"{stem}.safetensors", cache_dir / f"{stem}.json"
    try:
        if json.loads(identity_path.read_text()) == identity:
            return load_file(statistics_path)
    except (OSError, json.JSONDecodeError, SafetensorError):
        pass  # no entry, or a broken one: compute it again
    statistics = fid_statistics(images, extractor, batch_size)
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(statistics_path, lambda path: save_file(statistics, str(path)))
    write_atomically(identity_path, lambda path: path.write_text(json.dumps(identity, indent=2) + "\n"))
    return statistics


def check_images(images: torch.Tensor, what: str) -> None:
    if images.ndim != 4 or images.shape[1] not in (1, 3) or len(images) < 2:
        raise InputError(f"FID needs at least two N x C x H x W {what} with 1 or 3 channels, got {tuple(images.shape)}")


def fid(samples: torch.Tensor, reference: torch.Tensor | str, *, extractor: str = "digits", inception_weights=None,
        cache_dir=CACHE_DIR, reference_name: str | None = None, batch_size: int = 64) -> dict:
    """FID between ``samples`` and ``reference`` (images in [-1, 1], or a dataset name for :func:`load_images`).

    Returns {'label', 'value', 'extractor', 'n_samples', 'n_reference', 'reference'}; 'reference' is
    the cache name of the reference set.
    """
    check_images(samples, "samples")
    arguments = extractor_arguments(extractor, inception_weights)
    if isinstance(reference, str):
        reference_name = reference_name or reference
        reference = load_images(reference, image_size=samples.shape[-1], channels=samples.shape[1])
    check_images(reference, "reference images")
    identity = reference_identity(reference_name or "reference", reference, extractor, arguments["id"])
    feature_extractor = build_extractor(arguments)
    reference_statistics = cached_reference_statistics(reference, identity, feature_extractor, batch_size, cache_dir)
    sample_statistics = fid_statistics(samples, feature_extractor, batch_size)
    value = fid_statistics_to_metric(sample_statistics, reference_statistics, verbose=False)[KEY_METRIC_FID]
    return {"label": EXTRACTORS[extractor], "value": value, "extractor": extractor,
            "n_samples": len(samples), "n_reference": len(reference), "reference": identity["cache_name"]}
