import shutil

import pytest
import torch
from sklearn.datasets import load_digits

from diffprune_core.data import load_images
from diffprune_core.digits_classifier import (CLASSIFIER_DIR, ClassifierTraining, classifier_info, classify_samples,
                                              digits_split, load_classifier, main, to_classifier_input,
                                              train_classifier)
from diffprune_core.errors import InputError


def test_shipped_classifier_reads_the_test_split():
    classifier = load_classifier()
    _, test = digits_split()
    images = load_images("digits", image_size=16, channels=1)[test]
    with torch.no_grad():
        predicted = classifier(images).argmax(dim=1)
    accuracy = (predicted == torch.from_numpy(load_digits().target[test])).float().mean().item()
    assert accuracy == pytest.approx(classifier_info()["test_accuracy"], abs=1e-6)
    assert accuracy > 0.98


def test_classify_samples_reports_confidence_and_classes():
    _, test = digits_split()
    real = load_images("digits", image_size=16, channels=1)[test]
    report = classify_samples(real)
    assert report["n"] == len(test) and sum(report["class_histogram"]) == len(test)
    assert report["confident_rate"] > 0.9 and min(report["class_histogram"]) > 25
    blank = classify_samples(-torch.ones(8, 1, 16, 16))
    assert max(blank["class_histogram"]) == 8, "eight identical images get one class"
    assert blank["inception_score"] == pytest.approx(1.0), "identical images: p(y|x) = p(y), KL 0, IS 1"
    assert 8 < report["inception_score"] <= 10, "real digits: confident and spread over the 10 classes"


def test_class_accuracy_counts_the_requested_digits():
    _, test = digits_split()
    real = load_images("digits", image_size=16, channels=1)[test]
    labels = torch.from_numpy(load_digits().target[test])
    assert classify_samples(real, labels=labels)["class_accuracy"] > 0.98
    assert classify_samples(real, labels=(labels + 1) % 10)["class_accuracy"] < 0.02
    assert "class_accuracy" not in classify_samples(real)


def test_classifier_input_is_gray_16x16_from_any_size_and_channels():
    rgb = torch.rand(2, 3, 32, 32) * 2 - 1
    assert to_classifier_input(rgb).shape == (2, 1, 16, 16)
    with pytest.raises(InputError):
        to_classifier_input(torch.zeros(2, 4, 16, 16))


def test_training_is_deterministic():
    config = ClassifierTraining(epochs=1)
    first, accuracy, _ = train_classifier(config, progress=False)
    second, again, _ = train_classifier(config, progress=False)
    assert accuracy == again and accuracy > 0.3
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)


def test_tampered_or_missing_weights_are_input_errors(tmp_path):
    copy = tmp_path / "classifier"
    shutil.copytree(CLASSIFIER_DIR, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(InputError, match="sha256"):
        load_classifier(copy)
    with pytest.raises(InputError, match="python -m diffprune_core.digits_classifier"):
        load_classifier(tmp_path / "nowhere")


def test_recipe_refuses_a_non_empty_output_folder_before_training(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="error: .*not empty"):
        main(["--out", str(tmp_path)])
