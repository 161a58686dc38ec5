"""A small CNN that reads the embedded digits (16x16 grayscale), trained here, shipped in data/digits_classifier.

It judges samples of the digits U-Nets twice, where CIFAR-10 would use Inception-v3:
- the *confident-prediction rate*: the fraction of samples whose top softmax probability is at
  least 0.9 (a legible digit), with the histogram of predicted classes (are all ten digits drawn?);
- the features of its penultimate layer feed "FID (digits features)" (see :mod:`diffprune_core.fid`).

Recipe: ``python -m diffprune_core.digits_classifier --out data/digits_classifier`` trains it on a
stratified 80/20 split of scikit-learn's digits (fixed seed, about a minute on a CPU) and writes
model.safetensors and classifier.json (architecture, training settings, test accuracy, sha256).
"""
import argparse
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.transforms.functional import rgb_to_grayscale

from .data import DATA_DIR, load_images, to_model_range
from .errors import InputError
from .fileio import atomic_dir, check_output_dir, write_json
from .progress import bar

CLASSIFIER_DIR = DATA_DIR / "digits_classifier"
IMAGE_SIZE = 16
CONFIDENCE = 0.9


@dataclass(kw_only=True)
class ClassifierTraining:
    seed: int = 0
    test_fraction: float = 0.2
    epochs: int = 60
    batch_size: int = 64
    learning_rate: float = 1e-3
    max_shift: int = 1  # augmentation: each batch moved by up to this many pixels


class DigitsClassifier(nn.Module):
    """Two conv-ReLU-maxpool stages (16 -> 8 -> 4 pixels), a ReLU feature layer, a linear head."""

    def __init__(self, *, widths: tuple = (16, 32), features: int = 64, classes: int = 10):
        super().__init__()
        self.architecture = {"widths": list(widths), "features": features, "classes": classes}
        stages, channels = [], 1
        for width in widths:
            stages += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels = width
        side = IMAGE_SIZE // 2 ** len(widths)
        self.body = nn.Sequential(*stages, nn.Flatten(), nn.Linear(channels * side * side, features), nn.ReLU())
        self.head = nn.Linear(features, classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features of N x 1 x 16 x 16 images in [-1, 1]."""
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def to_classifier_input(images: torch.Tensor) -> torch.Tensor:
    """Any N x C x H x W images in [-1, 1] (C = 1 or 3) as the classifier's N x 1 x 16 x 16 grayscale.

    RGB becomes its luminance (0.299 R + 0.587 G + 0.114 B): the classifier is a feature extractor for a
    metric, and says so in its FID label, so reading colour images in gray is part of its definition.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise InputError(f"the digits classifier reads N x 1 x H x W or N x 3 x H x W images, got {tuple(images.shape)}")
    pixels = (images.float() + 1) / 2
    return to_model_range(rgb_to_grayscale(pixels) if pixels.shape[1] == 3 else pixels, IMAGE_SIZE)


def digits_split(*, seed: int = 0, test_fraction: float = 0.2) -> tuple:
    """(train indices, test indices) of scikit-learn's digits, stratified by label."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    labels = load_digits().target
    return train_test_split(np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=seed)


def train_classifier(config: ClassifierTraining, progress: bool = True) -> tuple:
    """Train on the train split; return (classifier, test accuracy, test confident-prediction rate)."""
    from sklearn.datasets import load_digits

    images = load_images("digits", image_size=IMAGE_SIZE, channels=1)
    labels = torch.from_numpy(load_digits().target)
    train, test = (torch.from_numpy(split) for split in digits_split(seed=config.seed,
                                                                     test_fraction=config.test_fraction))
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    classifier = DigitsClassifier()
    optimizer = torch.optim.Adam(classifier.parameters(), lr=config.learning_rate)
    shift = config.max_shift
    padded = F.pad(images, (shift,) * 4, value=-1)
    for _ in bar(range(config.epochs), desc="digits classifier", progress=progress):
        for batch in train[torch.randperm(len(train), generator=generator)].split(config.batch_size):
            dy, dx = torch.randint(0, 2 * shift + 1, (2,), generator=generator).tolist()
            loss = F.cross_entropy(classifier(padded[batch, :, dy:dy + IMAGE_SIZE, dx:dx + IMAGE_SIZE]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    classifier.eval()
    with torch.no_grad():
        probabilities = classifier(images[test]).softmax(dim=1)
    accuracy = (probabilities.argmax(dim=1) == labels[test]).float().mean().item()
    confident = (probabilities.max(dim=1).values >= CONFIDENCE).float().mean().item()
    return classifier, accuracy, confident


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_classifier(classifier: DigitsClassifier, out_dir, *, config: ClassifierTraining, accuracy: float,
                    confident_rate: float) -> None:
    with atomic_dir(out_dir) as tmp:
        save_file(classifier.state_dict(), tmp / "model.safetensors")
        write_json(tmp / "classifier.json", {
            "architecture": classifier.architecture,
            "input": "N x 1 x 16 x 16 grayscale in [-1, 1]; see to_classifier_input",
            "training": asdict(config),
            "test_accuracy": accuracy,
            "test_confident_rate": confident_rate,
            "confidence_threshold": CONFIDENCE,
            "sha256": sha256(tmp / "model.safetensors"),
        })


def classifier_info(folder=CLASSIFIER_DIR) -> dict:
    """The classifier.json of a classifier folder (architecture, accuracy, sha256 of the weights)."""
    info_path = Path(folder) / "classifier.json"
    if not (info_path.is_file() and (Path(folder) / "model.safetensors").is_file()):
        raise InputError(f"no digits classifier in {folder} (model.safetensors + classifier.json); "
                         f"train one with: python -m diffprune_core.digits_classifier --out {folder}")
    return json.loads(info_path.read_text())


def load_classifier(folder=CLASSIFIER_DIR) -> DigitsClassifier:
    """The shipped classifier, checked against the sha256 in its classifier.json."""
    info, weights = classifier_info(folder), Path(folder) / "model.safetensors"
    if sha256(weights) != info["sha256"]:
        raise InputError(f"{weights} does not match the sha256 recorded in its classifier.json")
    classifier = DigitsClassifier(**info["architecture"])
    classifier.load_state_dict(load_file(weights))
    return classifier.eval().requires_grad_(False)


@torch.no_grad()
def classify_samples(samples: torch.Tensor, classifier: DigitsClassifier | None = None, *, labels=None) -> dict:
    """What the classifier reads in samples in [-1, 1]: the confident-prediction rate (top softmax >= 0.9),
    the histogram of predicted digits, the Inception Score's analogue with this classifier,
    exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016; at most 10), and, given the requested ``labels``,
    the class accuracy (how often the prediction is the requested digit)."""
    classifier = classifier or load_classifier()
    probabilities = classifier(to_classifier_input(samples.cpu())).softmax(dim=1).double()
    top, predicted = probabilities.max(dim=1)
    marginal = probabilities.mean(dim=0, keepdim=True)
    kl = (probabilities * (probabilities.clamp_min(1e-12).log() - marginal.clamp_min(1e-12).log())).sum(dim=1)
    judged = {"confident_rate": (top >= CONFIDENCE).float().mean().item(),
              "class_histogram": torch.bincount(predicted, minlength=10).tolist(), "n": len(samples),
              "inception_score": kl.mean().exp().item()}
    if labels is not None:
        judged["class_accuracy"] = (predicted == torch.as_tensor(labels)).float().mean().item()
    return judged


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Train the digits classifier and write it to a new folder.")
    parser.add_argument("--out", default=str(CLASSIFIER_DIR), help="output folder (must not exist or be empty)")
    parser.add_argument("--seed", type=int, default=ClassifierTraining.seed)
    parser.add_argument("--epochs", type=int, default=ClassifierTraining.epochs)
    args = parser.parse_args(argv)
    try:
        check_output_dir(args.out)
        config = ClassifierTraining(seed=args.seed, epochs=args.epochs)
        classifier, accuracy, confident_rate = train_classifier(config)
        save_classifier(classifier, args.out, config=config, accuracy=accuracy, confident_rate=confident_rate)
    except InputError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"test accuracy {accuracy:.4f}, confident-prediction rate {confident_rate:.4f}, written to {args.out}")


if __name__ == "__main__":
    main()
