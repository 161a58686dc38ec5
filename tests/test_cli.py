"""``python -m diffprune_core prune``: the report, and a one-line error with nothing written on bad input."""
import json
import subprocess
import sys

import pytest
import torch

from diffprune_core.checkpoints import load_unet
from diffprune_core.cli import main


@pytest.fixture
def model_dir(tiny_unet, tmp_path):
    tiny_unet.save_pretrained(tmp_path / "teacher")
    return str(tmp_path / "teacher")


def prune(model_dir, out, *extra):
    return main(["prune", "--model", model_dir, "--out", str(out), "--batch-size", "4", *extra])


def test_diff_pruning_writes_model_and_report(model_dir, tmp_path, capsys):
    out = tmp_path / "pruned"
    assert prune(model_dir, out, "--criterion", "diff-pruning", "--threshold", "0.05", "--stride", "250") == 0
    report = json.loads((out / "report.json").read_text())
    for key in ["params_before", "params_after", "macs_before", "macs_after", "criterion", "ratio", "threshold",
                "timesteps_used"]:
        assert key in report
    assert report["params_after"] < report["params_before"] and report["macs_after"] < report["macs_before"]
    assert report["timesteps_used"][0] == 0 and report["timesteps_used"] == sorted(report["timesteps_used"])
    assert load_unet(str(out)).conv_in.out_channels == 12  # 16 -> 12 at ratio 0.3 with 4 GroupNorm groups
    assert "params_after" in capsys.readouterr().out


def test_macs_reduction_mode(model_dir, tmp_path):
    assert prune(model_dir, tmp_path / "p", "--criterion", "magnitude", "--macs-reduction", "0.44") == 0
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["macs_after"] / report["macs_before"] == pytest.approx(0.56, abs=0.1)
    assert report["timesteps_used"] == [] and report["threshold"] is None


def test_released_code_scores_make_taylor_and_diff_pruning_at_T0_one_method(model_dir, tmp_path):
    """ddpm_exp's --pruner taylor and ours build the same importance; at T = 0 they prune the same channels."""
    def pruned(criterion, form):
        out = tmp_path / f"{criterion}-{form}"
        assert prune(model_dir, out, "--criterion", criterion, "--threshold", "0", "--stride", "250",
                     "--score-form", form) == 0
        assert json.loads((out / "report.json").read_text())["score_form"] == form
        return load_unet(str(out)).state_dict()

    released = pruned("taylor", "released-code"), pruned("diff-pruning", "released-code")
    assert all(torch.equal(released[0][name], released[1][name]) for name in released[0])
    equation = pruned("taylor", "equation"), pruned("diff-pruning", "equation")
    assert any(equation[0][name].shape != equation[1][name].shape or not torch.equal(equation[0][name], equation[1][name])
               for name in equation[0]), "the paper's two Taylor scores differ (Eq. 6 against Eq. 10)"


@pytest.mark.parametrize("args, message", [
    (["--criterion", "fisher"], "unknown criterion"),
    (["--criterion", "magnitude", "--ratio", "1.2"], "ratio must be in"),
    (["--criterion", "magnitude", "--ratio", "0"], "ratio must be in"),
    (["--criterion", "diff-pruning", "--threshold", "1"], "--threshold"),
    (["--criterion", "magnitude", "--macs-reduction", "2"], "macs-reduction"),
    (["--criterion", "diff-pruning", "--data", "folder:/no/such/dir"], "dir"),
    (["--criterion", "diff-pruning", "--data", "cifar10:/no/such/root"], "cifar"),
    (["--criterion", "taylor", "--score-form", "squared"], "--score-form"),
    (["--criterion", "magnitude", "--multiple-of", "0"], "multiple_of"),
    (["--criterion", "diff-pruning", "--timesteps-per-forward", "0"], "--timesteps-per-forward"),
])
def test_bad_input_exits_with_one_line_and_writes_nothing(model_dir, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert prune(model_dir, out, *args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message.lower() in err.lower()
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != "teacher"] == []


def test_missing_and_corrupt_models(tmp_path, capsys):
    assert main(["prune", "--model", str(tmp_path / "nothing"), "--criterion", "random", "--out", str(tmp_path / "o")]) == 1
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    assert main(["prune", "--model", str(tmp_path / "bad"), "--criterion", "random", "--out", str(tmp_path / "o")]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and all(e.startswith("error: ") for e in errors)
    assert not (tmp_path / "o").exists()


def test_data_that_does_not_fit_the_model(tmp_path, capsys):
    from diffusers import UNet2DModel

    from diffprune_core.teacher import TEACHER_UNET_KWARGS
    two_channels = UNet2DModel(**{**TEACHER_UNET_KWARGS, "in_channels": 2, "out_channels": 2})
    two_channels.save_pretrained(tmp_path / "latent")
    assert main(["prune", "--model", str(tmp_path / "latent"), "--criterion", "taylor", "--data", "digits",
                 "--out", str(tmp_path / "o")]) == 1
    assert "channels" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_module_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "diffprune_core", "prune", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--macs-reduction" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--criterion", "magnitude", "--ratio", "0.3", "--macs-reduction", "0.4"], "not both"),
    (["--criterion", "magnitude", "--operators", "2"], "--operators is a target of --criterion ld-pruner"),
    (["--criterion", "magnitude", "--batch-size", "many"], "invalid int value"),
])
def test_conflicting_targets_are_refused(model_dir, tmp_path, capsys, args, message):
    assert prune(model_dir, tmp_path / "out", *args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()
