"""``python -m diffprune_core finetune | sample | evaluate | prune --criterion ld-pruner`` on tiny U-Nets.

Happy paths write what their --help promises; bad input is one ``error:`` line, exit 1, nothing written.
"""
import copy
import json
import re

import pandas as pd
import pytest
import torch
from diffusers import UNet2DModel
from safetensors.torch import load_file

from diffprune_core.architectures import example_inputs
from diffprune_core.checkpoints import WEIGHTS, WIDTHS, load_unet
from diffprune_core.cli import main, reinitialise
from diffprune_core.complexity import count_macs
from diffprune_core.criteria import StructureImportance
from diffprune_core.fid import to_uint8
from diffprune_core.ldpruner import apply_modifications
from diffprune_core.metrics import mean_ssim
from diffprune_core.pruner import prune_unet
from diffprune_core.sampling import ddim_sample


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def model_dir(tiny_unet, tmp_path):
    """The teacher's architecture (16x16, one channel), random weights, as a diffusers folder."""
    tiny_unet.save_pretrained(tmp_path / "teacher")
    return str(tmp_path / "teacher")


@pytest.fixture
def small_model_dir(tmp_path):
    """An 8x8 one-channel U-Net with 11 LD-Pruner operators: scoring them all takes a second."""
    torch.manual_seed(0)
    UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                norm_num_groups=4, attention_head_dim=None).save_pretrained(tmp_path / "small")
    return str(tmp_path / "small")


def run(*args) -> int:
    return main([str(arg) for arg in args])


def finetune(model, out, steps, *extra):
    return run("finetune", "--model", model, "--data", "digits", "--steps", steps, "--batch-size", 4, "--out", out,
               *extra)


# ---------------------------------------------------------------------------------------------- sample

def test_sample_writes_uint8_samples_grid_and_report(model_dir, tmp_path, capsys):
    out = tmp_path / "samples"
    assert run("sample", "--model", model_dir, "--n", 4, "--seed", 3, "--steps", 2, "--batch-size", 3,
               "--out", out) == 0
    assert "DDIM (4 samples): 100%" in capsys.readouterr().err, "a progress bar with its ETA"
    pixels = load_file(out / "samples.safetensors")["samples"]
    assert pixels.dtype == torch.uint8 and pixels.shape == (4, 1, 16, 16)
    expected = ddim_sample(load_unet(model_dir), n=4, seed=3, steps=2, progress=False)
    assert torch.equal(pixels, to_uint8(expected)), "the samples are the seed's DDIM samples, whatever the batch size"
    assert (out / "grid.png").read_bytes().startswith(b"\x89PNG")
    report = json.loads((out / "report.json").read_text())
    assert (report["seed"], report["steps"], report["n"]) == (3, 2, 4) and report["sampling_wall_time_s"] > 0
    assert (report["spacing"], report["clip_sample"]) == ("uniform", True), "the scheduler config clips"


def test_sample_with_the_released_evaluation_settings(model_dir, tmp_path):
    out = tmp_path / "samples"
    assert run("sample", "--model", model_dir, "--n", 2, "--seed", 1, "--steps", 3, "--spacing", "quad",
               "--no-clip-sample", "--out", out) == 0
    expected = ddim_sample(load_unet(model_dir), n=2, seed=1, steps=3, spacing="quad", clip_sample=False,
                           progress=False)
    assert torch.equal(load_file(out / "samples.safetensors")["samples"], to_uint8(expected))
    assert not torch.equal(to_uint8(expected), to_uint8(ddim_sample(load_unet(model_dir), n=2, seed=1, steps=3,
                                                                     progress=False)))
    report = json.loads((out / "report.json").read_text())
    assert (report["spacing"], report["clip_sample"]) == ("quad", False)


# -------------------------------------------------------------------------------------------- evaluate

def test_evaluate_reports_complexity_latency_fid_ssim_and_digits(model_dir, tmp_path):
    out, cache, other = tmp_path / "eval", tmp_path / "fid-cache", tmp_path / "other"
    reinitialise(load_unet(model_dir), seed=1).save_pretrained(other)
    assert run("evaluate", "--model", model_dir, "--reference", other, "--data", "digits", "--n", 4, "--seed", 0,
               "--steps", 2, "--latency-repeats", 1, "--fid-cache", cache, "--out", out) == 0
    report = json.loads((out / "report.json").read_text())
    model = load_unet(model_dir)
    complexity = count_macs(model, example_inputs(model))
    assert (report["params"], report["macs"], report["macs_with_attention"]) == (
        complexity["params"], complexity["macs"], complexity["macs_with_attention"])
    assert report["latency"]["seconds_per_image"] > 0 and report["latency"]["steps"] == 2
    assert report["fid"]["label"] == "FID (digits features)" and report["fid"]["value"] > 0
    assert report["fid"]["n_samples"] == 4 and report["fid"]["n_reference"] == 1797
    samples = [ddim_sample(load_unet(str(m)), n=4, seed=0, steps=2, progress=False) for m in (model_dir, other)]
    assert report["ssim_to_reference"] == pytest.approx(mean_ssim(*samples)), "pairs from the same x_T"
    assert report["ssim_to_reference"] < 0.99
    assert report["sampler"] == "DDIM, 2 steps, eta 0, uniform spacing, x_0 clipped"
    assert sum(report["digits_classifier"]["class_histogram"]) == 4
    assert 0 <= report["digits_classifier"]["confident_rate"] <= 1
    assert {path.suffix for path in cache.iterdir()} == {".safetensors", ".json"}, "no pickle in the FID cache"
    assert (out / "grid.png").is_file()


# -------------------------------------------------------------------------------------------- finetune

def test_finetune_writes_the_ema_model_checkpoints_and_report(model_dir, tmp_path, capsys):
    out = tmp_path / "ft"
    assert finetune(model_dir, out, 2) == 0
    assert re.search(r"DDPM training: 100%.*2/2 \[.*<.*loss=\d", capsys.readouterr().err), "a bar with ETA and loss"
    report = json.loads((out / "report.json").read_text())
    assert (report["command"], report["init"], report["data"], report["steps"]) == (
        "finetune", "pretrained", "digits", 2)
    assert report["config"]["batch_size"] == 4 and report["config"]["lr"] == 1e-3, "the cpu preset, batch overridden"
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000002"]
    trained = load_unet(str(out / "model"))
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(),
                                                     load_unet(model_dir).state_dict().values()))


def test_finetune_resumed_equals_uninterrupted_bit_for_bit(model_dir, tmp_path):
    assert finetune(model_dir, tmp_path / "whole", 4) == 0
    assert finetune(model_dir, tmp_path / "resumed", 2) == 0
    assert finetune(model_dir, tmp_path / "resumed", 4) == 1, "without --resume a used folder is refused"
    assert finetune(model_dir, tmp_path / "resumed", 4, "--resume") == 0
    assert json.loads((tmp_path / "resumed" / "report.json").read_text())["resumed_from_step"] == 2
    whole, resumed = (load_file(tmp_path / name / "model" / WEIGHTS) for name in ("whole", "resumed"))
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[key], resumed[key]) for key in whole)


def test_finetune_from_scratch_trains_the_pruned_architecture(model_dir, tmp_path):
    assert run("prune", "--model", model_dir, "--criterion", "magnitude", "--out", tmp_path / "pruned") == 0
    assert finetune(tmp_path / "pruned", tmp_path / "scratch", 1, "--init", "random") == 0
    scratch = load_unet(str(tmp_path / "scratch" / "model"))
    assert scratch.conv_in.out_channels == 12, "the pruned widths"
    assert json.loads((tmp_path / "scratch" / "report.json").read_text())["init"] == "random"


def test_reinitialise_draws_every_pruned_layer_afresh(tiny_unet):
    prune_unet(tiny_unet, StructureImportance("magnitude"), ratio=0.3, inputs=example_inputs(tiny_unet))
    before = {name: value.clone() for name, value in tiny_unet.state_dict().items()}
    twin = copy.deepcopy(tiny_unet)
    reinitialise(tiny_unet, seed=5)
    after = tiny_unet.state_dict()
    assert {name: value.shape for name, value in after.items()} == {name: value.shape for name, value in before.items()}
    for name, module in tiny_unet.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):  # PyTorch's default: U(+-1/sqrt(fan_in))
            bound = 1 / (module.weight[0].numel()) ** 0.5
            assert module.weight.abs().max() <= bound and not torch.equal(module.weight, before[f"{name}.weight"])
        elif isinstance(module, torch.nn.GroupNorm):
            assert torch.equal(module.weight, torch.ones_like(module.weight)) and not module.bias.any()
    again = reinitialise(twin, seed=5).state_dict()
    assert all(torch.equal(after[name], again[name]) for name in after), "a function of the seed"


# ------------------------------------------------------------------------------------ prune, ld-pruner

@pytest.mark.parametrize("target", [("--operators", 2), ("--macs-reduction", 0.2)])
def test_ld_pruner_prunes_writes_ranking_and_reloads(small_model_dir, tmp_path, target):
    out = tmp_path / "ld"
    assert run("prune", "--model", small_model_dir, "--criterion", "ld-pruner", *target, "--n-gen", 2,
               "--sample-steps", 2, "--out", out) == 0
    report = json.loads((out / "report.json").read_text())
    assert (report["criterion"], report["ratio"], report["threshold"], report["timesteps_used"]) == (
        "ld-pruner", None, None, [])
    assert report["params_after"] < report["params_before"] and report["macs_after"] < report["macs_before"]
    if target[0] == "--operators":
        assert report["num_operators_modified"] == 2
    else:
        assert report["macs_after"] <= 0.8 * report["macs_before"]
    ranking = pd.read_csv(out / "ranking.csv")
    assert list(ranking["rank"]) == list(range(1, len(ranking) + 1)) and ranking["score"].is_monotonic_increasing
    modified = report["operators_modified"]
    assert json.loads((out / WIDTHS).read_text())["operator_modifications"] == modified
    assert modified == ranking.drop_duplicates("operator")[["operator", "modification"]].values.tolist()[:len(modified)]

    reloaded = load_unet(str(out))
    expected = apply_modifications(load_unet(small_model_dir), modified)  # remove/replace keep the weights
    inputs = example_inputs(reloaded, batch_size=2)
    with torch.no_grad():
        output = reloaded(**inputs).sample
        assert output.shape == inputs["sample"].shape and torch.equal(output, expected(**inputs).sample)


# ----------------------------------------------------------------------------------------- bad input

def sample_args(model, out):
    return ["sample", "--model", model, "--n", 4, "--seed", 0, "--steps", 2, "--out", out]


def evaluate_args(model, out):
    return ["evaluate", "--model", model, "--data", "digits", "--n", 4, "--seed", 0, "--steps", 2, "--out", out]


def finetune_args(model, out):
    return ["finetune", "--model", model, "--data", "digits", "--steps", 2, "--batch-size", 4, "--out", out]


def ld_args(model, out):
    return ["prune", "--model", model, "--criterion", "ld-pruner", "--operators", 2, "--n-gen", 2,
            "--sample-steps", 2, "--out", out]


COMMANDS = {"sample": sample_args, "evaluate": evaluate_args, "finetune": finetune_args, "ld-pruner": ld_args}
BAD = [  # (command, replacements of (flag, value) or flags appended, part of the message)
    ("sample", {"--n": 0}, "--n must be at least 1"),
    ("sample", {"--n": "four"}, "invalid int value"),
    ("sample", {"--steps": 1001}, "--steps must be in [1, 1000]"),
    ("sample", ["--eta", -1], "--eta"),
    ("sample", ["--batch-size", 0], "--batch-size"),
    ("sample", ["--spacing", "linear"], "invalid choice"),
    ("evaluate", ["--spacing", "cubic"], "invalid choice"),
    ("evaluate", {"--n": 1}, "--n must be at least 2"),
    ("evaluate", {"--data": "mnist"}, "unknown dataset"),
    ("evaluate", {"--data": "folder:/no/such/dir"}, "does not exist"),
    ("evaluate", ["--inception-weights", "/no/such/weights.pth"], "weights-inception"),
    ("evaluate", ["--latency-repeats", 0], "--latency-repeats"),
    ("finetune", {"--steps": 0}, "steps must be at least 1"),
    ("finetune", ["--lr", -1], "lr and grad_clip must be positive"),
    ("finetune", ["--ema-decay", 1], "ema_decay"),
    ("finetune", ["--preset", "paper"], "invalid choice"),
    ("finetune", {"--data": "cifar10:/no/such/root"}, "cifar-10 not found"),
    ("finetune", ["--init", "zeros"], "invalid choice"),
    ("ld-pruner", {"--operators": 0}, "--operators must be at least 1"),
    ("ld-pruner", {"--operators": 99}, "this u-net has 28 operators"),
    ("ld-pruner", ["--macs-reduction", 0.3], "exactly one target"),
    ("ld-pruner", ["--ratio", 0.3], "--ratio is for channel criteria"),
    ("ld-pruner", {"--n-gen": 0}, "--n-gen"),
    ("ld-pruner", {"--sample-steps": 0}, "--sample-steps"),
]


def command_line(command, model, out, change):
    args = COMMANDS[command](model, out)
    if isinstance(change, dict):
        for flag, value in change.items():
            args[args.index(flag) + 1] = value
    else:
        args += change
    return args


def assert_refused(capsys, tmp_path, message, keep=("teacher",)):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message.lower() in err.lower(), err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep), "nothing written"


@pytest.mark.parametrize("command, change, message", BAD)
def test_bad_numbers_and_data_exit_1_with_one_line_and_write_nothing(model_dir, tmp_path, capsys, command, change,
                                                                      message):
    assert run(*command_line(command, model_dir, tmp_path / "out", change)) == 1
    assert_refused(capsys, tmp_path, message)


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_model_and_used_output_folder(command, model_dir, tmp_path, capsys):
    assert run(*COMMANDS[command](tmp_path / "no-model", tmp_path / "out")) == 1
    assert_refused(capsys, tmp_path, "no such model folder")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    assert run(*COMMANDS[command](model_dir, tmp_path / "used")) == 1
    assert_refused(capsys, tmp_path, "already exists and is not empty", keep=("teacher", "used"))
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("command", ["evaluate", "finetune"])
def test_grayscale_data_for_an_rgb_model_is_refused(command, tiny_cond_unet, tmp_path, capsys):
    tiny_cond_unet.save_pretrained(tmp_path / "teacher")
    assert run(*COMMANDS[command](tmp_path / "teacher", tmp_path / "out")) == 1
    assert_refused(capsys, tmp_path, "digits holds grayscale (1 channel) images, but the model takes RGB")


def test_inception_weights_must_be_the_published_file(model_dir, tmp_path, capsys):
    (tmp_path / "teacher" / "fake.pth").write_bytes(b"not the weights")
    fake = tmp_path / "teacher" / "fake.pth"
    assert run(*evaluate_args(model_dir, tmp_path / "out"), "--inception-weights", fake) == 1
    assert_refused(capsys, tmp_path, "sha256")


@pytest.mark.parametrize("argv, message", [
    ([], "required: command"),
    (["train"], "invalid choice"),
    (["sample", "--n", "4"], "required"),
])
def test_bad_command_lines_are_one_line_errors(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


@pytest.mark.parametrize("command, promised", [
    ("finetune", ["--resume", "accelerate launch -m diffprune_core finetune", "--init", "OUT/model",
                  "clip 1, dropout 0.1, random horizontal flips, a checkpoint every 5000 steps"]),
    ("sample", ["samples.safetensors", "uint8 N x C x H x W", "grid.png", "--spacing", "--no-clip-sample"]),
    ("evaluate", ["FID (digits features)", "FID (Inception-v3)", "--reference", "SSIM", "latency", "--spacing",
                  "--no-clip-sample"]),
    ("prune", ["ld-pruner", "--operators", "--n-gen", "--sample-steps", "ranking.csv"]),
])
def test_help_explains_each_command(command, promised, capsys):
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    assert all(phrase in text for phrase in promised), [phrase for phrase in promised if phrase not in text]
