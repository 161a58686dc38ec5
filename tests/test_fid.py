import json

import pytest
import torch
import torch_fidelity
from safetensors.numpy import load_file, save_file

from diffprune_core import fid as fid_module, results
from diffprune_core.data import load_images
from diffprune_core.errors import InputError
from diffprune_core.fid import Uint8Images, digits_extractor_name, fid, fid_statistics as statistics_of


@pytest.fixture(scope="module")
def digits():
    return load_images("digits", image_size=16, channels=1, limit=300, seed=0)


def test_fid_of_a_set_against_itself_is_zero(digits, tmp_path):
    result = fid(digits[:150], digits[:150], cache_dir=tmp_path)
    assert result["label"] == "FID (digits features)" and result["extractor"] == "digits"
    assert result["value"] == pytest.approx(0, abs=1e-3)


def test_fid_orders_real_halves_before_noise(digits, tmp_path):
    other_half = fid(digits[:150], digits[150:], cache_dir=tmp_path)["value"]
    noise = torch.rand(150, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert 0 < other_half < 100, "small sets bias FID upward, yet two halves of one set stay close"
    assert fid(noise, digits[150:], cache_dir=tmp_path)["value"] > 10 * other_half


def test_reference_statistics_are_cached_by_name_size_count_and_content(digits, tmp_path):
    first = fid(digits[:100], digits[100:], cache_dir=tmp_path, reference_name="digits:part")
    assert first["reference"].startswith("digits_part-16px-200-")
    cached = sorted(path.name for path in tmp_path.iterdir())
    assert cached and all(name.startswith(first["reference"]) for name in cached)
    again = fid(digits[:100], digits[100:], cache_dir=tmp_path, reference_name="digits:part")
    assert again["value"] == first["value"]
    changed = fid(digits[:100], digits[100:].flip(-1), cache_dir=tmp_path, reference_name="digits:part")
    assert changed["reference"] != first["reference"] and changed["value"] != first["value"]


def test_a_changed_library_recomputes_the_reference_statistics(digits, tmp_path, monkeypatch):
    computed = []
    monkeypatch.setattr(fid_module, "fid_statistics", lambda images, *args: computed.append(len(images))
                        or statistics_of(images, *args))
    fid(digits[:100], digits[100:], cache_dir=tmp_path)
    fid(digits[:100], digits[100:], cache_dir=tmp_path)
    assert computed == [200, 100, 100], "the reference's statistics once, then from the cache"
    versions = results.package_versions()
    monkeypatch.setattr(results, "package_versions", lambda: {**versions, "torch-fidelity": "0.0"})
    fid(digits[:100], digits[100:], cache_dir=tmp_path)
    assert computed[3:] == [200, 100], "another torch-fidelity (or library source): computed again"


def test_a_dataset_name_is_a_reference_at_the_samples_shape(digits, tmp_path):
    gray = fid(digits[:50], "digits", cache_dir=tmp_path)
    assert gray["n_reference"] == 1797 and gray["reference"].startswith("digits-16px-1797-")
    with pytest.raises(InputError, match="grayscale"):  # RGB samples against gray digits: never converted
        fid(digits[:50].expand(-1, 3, -1, -1), "digits", cache_dir=tmp_path)


def test_value_is_torch_fidelitys_and_nothing_is_unpickled(digits, tmp_path, monkeypatch):
    expected = torch_fidelity.calculate_metrics(
        input1=Uint8Images(digits[:100]), input2=Uint8Images(digits[100:]), fid=True, cache=False, verbose=False,
        feature_extractor=digits_extractor_name(), save_cpu_ram=True, cuda=False)["frechet_inception_distance"]

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torch, "load", no_pickle)
    for _ in range(2):  # computed and cached, then read from the cache
        assert fid(digits[:100], digits[100:], cache_dir=tmp_path)["value"] == pytest.approx(expected, rel=1e-9)
    assert sorted(path.suffix for path in tmp_path.iterdir()) == [".json", ".safetensors"]
    identity = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert (identity["count"], identity["image_size"], identity["channels"]) == (200, [16, 16], 1)
    assert identity["extractor"] == digits_extractor_name() and identity["label"] == "FID (digits features)"
    assert len(identity["pixels_sha256"]) == 64


def test_a_cache_entry_is_read_only_when_its_json_matches(digits, tmp_path):
    first = fid(digits[:100], digits[100:], cache_dir=tmp_path)["value"]
    statistics_path, identity_path = next(tmp_path.glob("*.safetensors")), next(tmp_path.glob("*.json"))
    statistics = load_file(statistics_path)
    save_file({"mu": statistics["mu"] + 1, "sigma": statistics["sigma"]}, str(statistics_path))
    shifted = fid(digits[:100], digits[100:], cache_dir=tmp_path)["value"]
    assert shifted > first + 1, "the cached statistics are the ones used"
    identity = json.loads(identity_path.read_text())
    identity_path.write_text(json.dumps({**identity, "extractor": "another-extractor"}))
    assert fid(digits[:100], digits[100:], cache_dir=tmp_path)["value"] == pytest.approx(first, rel=1e-9)
    assert json.loads(identity_path.read_text()) == identity, "recomputed and rewritten"
    statistics_path.write_bytes(b"broken")
    assert fid(digits[:100], digits[100:], cache_dir=tmp_path)["value"] == pytest.approx(first, rel=1e-9)


def test_inception_fid_needs_weights_on_disk(digits, tmp_path):
    with pytest.raises(InputError, match="inception_weights"):
        fid(digits[:10], digits[10:20], extractor="inception", cache_dir=tmp_path)
    with pytest.raises(InputError, match="weights-inception"):
        fid(digits[:10], digits[10:20], extractor="inception", inception_weights=tmp_path / "missing.pth",
            cache_dir=tmp_path)
    (tmp_path / "fake.pth").write_bytes(b"a pickle from somewhere")
    with pytest.raises(InputError, match="sha256"):
        fid(digits[:10], digits[10:20], extractor="inception", inception_weights=tmp_path / "fake.pth",
            cache_dir=tmp_path)


@pytest.mark.parametrize("samples, kwargs", [
    (torch.zeros(4, 1, 16, 16), {"extractor": "clip"}),
    (torch.zeros(1, 1, 16, 16), {}),
    (torch.zeros(4, 2, 16, 16), {}),
    (torch.zeros(4, 16, 16), {}),
])
def test_bad_fid_requests_are_input_errors(digits, tmp_path, samples, kwargs):
    with pytest.raises(InputError):
        fid(samples, digits[:10], cache_dir=tmp_path, **kwargs)
