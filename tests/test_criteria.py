"""Diff-Pruning's criteria (Eq. 6-10, Algorithm 1): which timesteps, where the absolute value goes, how T stops."""
import pytest
import torch
import torch_pruning as tp
from diffusers.configuration_utils import FrozenDict
from torch import nn

from diffprune_core.criteria import StructureImportance, accumulate_gradients, fixed_noise, timestep_losses
from diffprune_core.errors import InputError
from diffprune_core.pipeline import noise_scheduler

ALPHAS = noise_scheduler().alphas_cumprod


class KnownLossModel(nn.Module):
    """eps_theta(x_t, t) = eps + s(t) * w, with eps recovered from x_t: so L_t = s(t)^2 * mean(w^2) exactly.

    It recovers eps from x_t using the clean images, so L_t has this value only if the criterion feeds
    sqrt(a_t) x + sqrt(1 - a_t) eps and compares with the same eps (Eq. 2).
    """

    def __init__(self, images, scale):
        super().__init__()
        self.images, self.scale = images, scale
        self.config = FrozenDict(sample_size=images.shape[-1], in_channels=images.shape[1])  # a pixel U-Net's shape
        self.w = nn.Parameter(torch.tensor([1.0, -2.0]))
        self.seen = []
        self.noises = []  # the eps recovered from each x_t

    def forward(self, noisy, timesteps):
        t = int(timesteps[0])
        self.seen.append((t, self.training))
        a = ALPHAS[t]
        eps = (noisy - a.sqrt() * self.images) / (1 - a).sqrt()
        self.noises.append(eps.detach())
        shift = self.scale(t) * self.w.view(1, 2, 1, 1)
        return type("Out", (), {"sample": eps + shift})()


def known_model():
    images = torch.rand(3, 2, 4, 4) * 2 - 1
    return KnownLossModel(images, lambda t: 1.0 / (1 + t)), images


def test_threshold_keeps_steps_above_T_and_drops_the_crossing_step():
    model, images = known_model()
    model.train()
    report = accumulate_gradients(model, images, ALPHAS, threshold=0.05, progress=False)
    # L_t / L_max = 1 / (1 + t)^2 > 0.05 for t = 0..3; t = 4 gives 0.04 and stops the loop (Algorithm 1, line 8).
    assert report.timesteps_used == [0, 1, 2, 3]
    assert report.stopped_at == 4
    assert list(report.losses) == [0, 1, 2, 3, 4]
    mean_w2 = (model.w.detach() ** 2).mean()
    assert report.losses[2] == pytest.approx((1 / 9) * mean_w2.item(), rel=1e-4)
    # The gradient is the sum over the kept steps only: d/dw s(t)^2 mean(w^2) = s(t)^2 w.
    expected = sum(1.0 / (1 + t) ** 2 for t in range(4)) * model.w.detach()
    torch.testing.assert_close(model.w.grad, expected, rtol=1e-4, atol=1e-6)
    assert all(not training for _, training in model.seen), "the model must be in eval mode"


def test_threshold_zero_uses_every_timestep_in_ascending_order():
    model, images = known_model()
    report = accumulate_gradients(model, images, ALPHAS, threshold=0.0, stride=100, progress=False)
    assert report.timesteps_used == list(range(0, 1000, 100))
    assert report.stopped_at is None


def test_max_steps_caps_the_number_of_timesteps():
    model, images = known_model()
    report = accumulate_gradients(model, images, ALPHAS, threshold=0.0, max_steps=7, progress=False)
    assert report.timesteps_used == list(range(7))


def test_one_noise_reused_at_every_timestep_and_fixed_by_the_seed():
    """Algorithm 1, line 3: one eps for all t. Fresh noise per t (or noise not from the seed) fails this."""
    model, images = known_model()
    accumulate_gradients(model, images, ALPHAS, threshold=0.0, stride=250, seed=5, progress=False)
    assert len(model.noises) == 4
    for eps in model.noises[1:]:
        torch.testing.assert_close(eps, model.noises[0], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(model.noises[0], fixed_noise(images, 5), rtol=1e-3, atol=1e-3)
    assert not torch.allclose(fixed_noise(images, 5), fixed_noise(images, 6))


def test_losses_of_the_curve_and_of_algorithm1_agree(tiny_unet):
    images = torch.rand(2, 1, 16, 16) * 2 - 1
    losses = timestep_losses(tiny_unet, images, ALPHAS, timesteps=[0, 500], seed=3, progress=False)
    report = accumulate_gradients(tiny_unet, images, ALPHAS, threshold=0.0, stride=500, seed=3, progress=False)
    torch.testing.assert_close(torch.tensor([report.losses[0], report.losses[500]]), losses)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_threshold_out_of_range(bad):
    model, images = known_model()
    with pytest.raises(InputError, match="threshold"):
        accumulate_gradients(model, images, ALPHAS, threshold=bad, progress=False)


def conv_pair_group():
    """conv1 (2 -> 3 channels) feeding conv2 (3 -> 2): pruning a channel of conv1 removes its row and conv2's column."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 1, bias=False), nn.Conv2d(3, 2, 1, bias=False))
    graph = tp.DependencyGraph().build_dependency(net, example_inputs=torch.randn(1, 2, 4, 4))
    group = graph.get_pruning_group(net[0], tp.prune_conv_out_channels, [0, 1, 2])
    for p in net.parameters():
        p.grad = torch.randn_like(p)
    rows = [(net[0].weight[c].flatten(), net[0].weight.grad[c].flatten()) for c in range(3)]
    cols = [(net[1].weight[:, c].flatten(), net[1].weight.grad[:, c].flatten()) for c in range(3)]
    return group, rows, cols


def test_structure_scores_follow_the_equations():
    group, rows, cols = conv_pair_group()
    w = [torch.cat([rows[c][0], cols[c][0]]).detach() for c in range(3)]
    g = [torch.cat([rows[c][1], cols[c][1]]) for c in range(3)]
    magnitude = torch.tensor([wc.pow(2).sum().sqrt() for wc in w], dtype=torch.float64)
    taylor = torch.tensor([(wc * gc).sum().abs() for wc, gc in zip(w, g)], dtype=torch.float64)  # Eq. 6, |sum_k|
    diff = torch.tensor([(wc * gc).abs().sum() for wc, gc in zip(w, g)], dtype=torch.float64)  # Eq. 7/10, sum_k |.|
    torch.testing.assert_close(StructureImportance("magnitude")(group), magnitude)
    torch.testing.assert_close(StructureImportance("taylor")(group), taylor)
    torch.testing.assert_close(StructureImportance("diff-pruning")(group), diff)
    assert not torch.allclose(taylor, diff), "the two Taylor variants must differ on this example"


def conv_norm_group():
    """conv1 (2 -> 4) -> GroupNorm(2, 4) -> conv2 (4 -> 2): a channel of conv1 is its row, its GroupNorm scale
    and conv2's column. Returns the group and, per channel, (w, g) of the conv weights and of the scale."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(2, 4, 1, bias=False), nn.GroupNorm(2, 4), nn.Conv2d(4, 2, 1, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(4))
    graph = tp.DependencyGraph().build_dependency(net, example_inputs=torch.randn(1, 2, 4, 4))
    group = graph.get_pruning_group(net[0], tp.prune_conv_out_channels, [0, 1, 2, 3])
    for p in net.parameters():
        p.grad = torch.randn_like(p)
    conv = [(torch.cat([net[0].weight[c].flatten(), net[2].weight[:, c].flatten()]).detach(),
             torch.cat([net[0].weight.grad[c].flatten(), net[2].weight.grad[:, c].flatten()])) for c in range(4)]
    scale = [(net[1].weight[c].detach(), net[1].weight.grad[c]) for c in range(4)]
    return group, conv, scale


def scores(function, channels: int = 4) -> torch.Tensor:
    return torch.tensor([function(c) for c in range(channels)], dtype=torch.float64)


def test_both_score_forms_follow_their_formulas():
    group, conv, scale = conv_norm_group()
    gn = lambda c: scale[c][0] * scale[c][1]  # noqa: E731  the GroupNorm scale's w g
    # The paper's equations: every weight of the structure, the GroupNorm scale included.
    eq_magnitude = scores(lambda c: (conv[c][0].pow(2).sum() + scale[c][0] ** 2).sqrt())
    eq_taylor = scores(lambda c: ((conv[c][0] * conv[c][1]).sum() + gn(c)).abs())  # Eq. 6: |sum_k w g|
    eq_diff = scores(lambda c: (conv[c][0] * conv[c][1]).abs().sum() + gn(c).abs())  # Eq. 10: sum_k |w g|
    # The released code (ddpm_exp/torch_pruning/importance.py): squared terms on convs, |w g| on GroupNorm scales;
    # magnitude: the mean over the two convs of sum w^2, GroupNorm left out.
    rc_taylor = scores(lambda c: (conv[c][0] * conv[c][1]).pow(2).sum() + gn(c).abs())
    rc_magnitude = scores(lambda c: conv[c][0].pow(2).sum() / 2)
    for criterion, form, expected in [("magnitude", "equation", eq_magnitude), ("taylor", "equation", eq_taylor),
                                      ("diff-pruning", "equation", eq_diff), ("magnitude", "released-code", rc_magnitude),
                                      ("taylor", "released-code", rc_taylor), ("diff-pruning", "released-code", rc_taylor)]:
        torch.testing.assert_close(StructureImportance(criterion, score_form=form)(group), expected,
                                   msg=f"{criterion} ({form})")
    assert not torch.allclose(eq_diff, rc_taylor) and not torch.allclose(eq_magnitude ** 2 / 2, rc_magnitude)


class Doubled(nn.Module):
    """conv1 (2 -> 3), its output concatenated with itself, conv2 (6 -> 2): conv2 sees each channel twice."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(2, 3, 1, bias=False), nn.Conv2d(6, 2, 1, bias=False)

    def forward(self, x):
        h = self.conv1(x)
        return self.conv2(torch.cat([h, h], dim=1))


def test_released_code_leaves_out_layers_with_another_index_count():
    """ddpm_exp's importance keeps only the layers whose score has the group's length (importance.py, lines
    118-122 and 422-426): conv2, reached twice through the concatenation, drops out of the released reading."""
    torch.manual_seed(2)
    net = Doubled()
    graph = tp.DependencyGraph().build_dependency(net, example_inputs=torch.randn(1, 2, 4, 4))
    group = graph.get_pruning_group(net.conv1, tp.prune_conv_out_channels, [0, 1, 2])
    assert sorted(len(item.idxs) for item in group if isinstance(item.dep.target.module, nn.Conv2d)) == [3, 6]
    for p in net.parameters():
        p.grad = torch.randn_like(p)
    w, g = net.conv1.weight.detach(), net.conv1.weight.grad
    released = scores(lambda c: (w[c] * g[c]).pow(2).sum(), 3)
    torch.testing.assert_close(StructureImportance("diff-pruning", score_form="released-code")(group), released)
    columns = lambda c: (net.conv2.weight[:, [c, c + 3]].detach() * net.conv2.weight.grad[:, [c, c + 3]]).abs().sum()  # noqa: E731
    equation = scores(lambda c: (w[c] * g[c]).abs().sum() + columns(c), 3)
    torch.testing.assert_close(StructureImportance("diff-pruning")(group), equation)


def test_torch_pruning_1_6_scores_leave_group_norm_scales_out():
    """What the Torch-Pruning most users have (1.6.1) computes for the same group: TaylorImportance is Eq. 10
    without the GroupNorm scale (GroupNorm is not among its target types), GroupMagnitudeImportance the
    released magnitude; both divided by the group's mean (their default normaliser)."""
    assert tp.__version__.startswith("1.6"), tp.__version__
    group, conv, scale = conv_norm_group()
    taylor = scores(lambda c: (conv[c][0] * conv[c][1]).abs().sum())
    magnitude = scores(lambda c: conv[c][0].pow(2).sum())
    torch.testing.assert_close(tp.importance.TaylorImportance()(group).double(), taylor / taylor.mean())
    torch.testing.assert_close(tp.importance.GroupMagnitudeImportance()(group).double(), magnitude / magnitude.mean())
    ours = StructureImportance("diff-pruning")(group)
    torch.testing.assert_close(ours - taylor, scores(lambda c: (scale[c][0] * scale[c][1]).abs()))


def test_random_scores_are_seeded_and_gradient_criteria_need_gradients():
    group, _, _ = conv_pair_group()
    assert torch.equal(StructureImportance("random", seed=1)(group), StructureImportance("random", seed=1)(group))
    for item in group:
        if isinstance(item.dep.target.module, nn.Conv2d):
            item.dep.target.module.weight.grad = None
    with pytest.raises(RuntimeError, match="accumulate_gradients"):
        StructureImportance("diff-pruning")(group)


def test_unknown_criterion_or_score_form():
    with pytest.raises(InputError, match="unknown criterion"):
        StructureImportance("fisher")
    with pytest.raises(InputError, match="unknown score form"):
        StructureImportance("taylor", score_form="squared")
