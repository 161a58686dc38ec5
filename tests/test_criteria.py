"""Diff-Pruning's criteria (Eq. 6-10, Algorithm 1): which timesteps, where the absolute value goes, how T stops."""
import pytest
import torch
import torch_pruning as tp
from diffusers.configuration_utils import FrozenDict
from torch import nn

from diffprune_core.criteria import (MAX_TIMESTEPS_PER_FORWARD, StructureImportance, accumulate_gradients,
                                     default_timesteps_per_forward, fixed_noise, timestep_losses)
from diffprune_core.errors import InputError
from diffprune_core.pipeline import noise_scheduler
from diffprune_core.thresholds import relative_losses

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

    def forward(self, noisy, timesteps):  # the batch once per timestep (Algorithm 1 runs several in one forward)
        n = len(self.images)
        self.seen += [(int(t), self.training) for t in timesteps[::n]]
        a = ALPHAS[timesteps].view(-1, 1, 1, 1)
        eps = (noisy - a.sqrt() * self.images.repeat(len(noisy) // n, 1, 1, 1)) / (1 - a).sqrt()
        self.noises += list(eps.detach().split(n))
        scale = torch.tensor([self.scale(int(t)) for t in timesteps]).view(-1, 1, 1, 1)
        return type("Out", (), {"sample": eps + scale * self.w.view(1, 2, 1, 1)})()


def known_model():
    images = torch.rand(3, 2, 4, 4) * 2 - 1
    return KnownLossModel(images, lambda t: 1.0 / (1 + t)), images


@pytest.mark.parametrize("per_forward", [1, 3, None])  # 3: the stop (t = 4) falls inside the second forward
def test_threshold_keeps_steps_above_T_and_drops_the_crossing_step(per_forward):
    model, images = known_model()
    model.train()
    report = accumulate_gradients(model, images, ALPHAS, threshold=0.05, timesteps_per_forward=per_forward,
                                  progress=False)
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


@pytest.mark.parametrize("per_forward", [1, 3])
def test_max_steps_caps_the_number_of_timesteps(per_forward):
    model, images = known_model()
    report = accumulate_gradients(model, images, ALPHAS, threshold=0.0, max_steps=7, timesteps_per_forward=per_forward,
                                  progress=False)
    assert report.timesteps_used == list(range(7)) and list(report.losses) == list(range(7))
    # whole chunks (0-2, 3-5, 6-8 at three a forward), the forwards of a pass without the cap, so that the sums are its
    assert [t for t, _ in model.seen] == list(range(7 if per_forward == 1 else 9))


@pytest.mark.parametrize("per_forward", [1, 4])
def test_one_noise_reused_at_every_timestep_and_fixed_by_the_seed(per_forward):
    """Algorithm 1, line 3: one eps for all t. Fresh noise per t (or noise not from the seed) fails this."""
    model, images = known_model()
    accumulate_gradients(model, images, ALPHAS, threshold=0.0, stride=250, seed=5, timesteps_per_forward=per_forward,
                         progress=False)
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


def test_timesteps_sharing_a_forward_give_the_loops_timesteps_and_sums(tiny_unet):
    """Issue 12: several timesteps per forward/backward, the same timesteps used and the same sums as one at a time,
    for thresholds that stop at different places (inside a chunk among them) and chunk sizes that do not divide."""
    images = torch.rand(4, 1, 16, 16) * 2 - 1
    ratios = relative_losses(timestep_losses(tiny_unet, images, ALPHAS, timesteps=range(0, 1000, 25), seed=1,
                                             progress=False))
    thresholds = [0.0, *sorted({round(float(ratios[1:].quantile(q)), 6) for q in (0.2, 0.6)})]
    stops_inside = 0
    for threshold in thresholds:
        reports, sums = [], []
        for per_forward in (1, 3, 8):
            reports.append(accumulate_gradients(tiny_unet, images, ALPHAS, threshold=threshold, stride=25, seed=1,
                                                timesteps_per_forward=per_forward, progress=False))
            sums.append([p.grad.clone() for p in tiny_unet.parameters()])
        loop = reports[0]
        for report, grads in zip(reports[1:], sums[1:]):
            assert (report.timesteps_used, report.stopped_at) == (loop.timesteps_used, loop.stopped_at), threshold
            assert report.losses == pytest.approx(loop.losses, rel=1e-5)
            for mine, expected in zip(grads, sums[0]):
                torch.testing.assert_close(mine, expected, rtol=1e-4, atol=1e-6)
        stops_inside += loop.stopped_at is not None and len(loop.timesteps_used) % 3 != 0
    assert stops_inside, "a stop inside a chunk of 3 must be among the cases"


def test_timesteps_per_forward_from_memory(tiny_unet, monkeypatch):
    images = torch.rand(4, 1, 16, 16) * 2 - 1
    report = accumulate_gradients(tiny_unet, images, ALPHAS, max_steps=2, progress=False)
    assert report.timesteps_used == [0, 1]
    x0, noise = images, fixed_noise(images, 0)
    assert default_timesteps_per_forward(tiny_unet, x0, noise, ALPHAS, {}) == MAX_TIMESTEPS_PER_FORWARD
    monkeypatch.setattr("os.sysconf", lambda name: 1024)  # a machine with a megabyte: one timestep at a time
    assert default_timesteps_per_forward(tiny_unet, x0, noise, ALPHAS, {}) == 1
    with pytest.raises(InputError, match="timesteps per forward"):
        accumulate_gradients(tiny_unet, images, ALPHAS, timesteps_per_forward=0, progress=False)


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
