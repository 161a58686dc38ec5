"""Importance criteria of Diff-Pruning (Section 4 and 5.2): random, magnitude, Taylor, Diff-Pruning.

A *structure* is one prunable channel: every weight that disappears with it (the kernel rows or
columns of the coupled convolutions and linears, and the scales of the normalisations on it), as
Torch-Pruning's dependency graph groups them. With w a weight of the structure and g its gradient
summed over the timesteps used, each criterion has two readings (:data:`SCORE_FORMS`).

``equation``, the paper's text (the default):

- ``random``:       I ~ U(0, 1)                               (Section 5.2)
- ``magnitude``:    I = sqrt(sum_k w_k^2), the group L2 norm, normalisation scales included  (Section 5.2)
- ``taylor``:       I = |sum_k w_k g_k|, over all T timesteps  (Eq. 5-6, the multi-variable Taylor)
- ``diff-pruning``: I = sum_k |w_k g_k|, over the timesteps kept by the threshold  (Eq. 7, 9, 10)

``released-code``, what produced Tables 1 and 5 and Figure 5: ``ddpm_exp/prune.py`` of
VainF/Diff-Pruning with its bundled ``ddpm_exp/torch_pruning/importance.py`` (MagnitudeImportance,
lines 18-126; TaylorImportance, lines 332-434):

- ``magnitude``:    I = mean over the conv/linear layers l of sum_{k in l} w_k^2; GroupNorm scales are
                    left out (the class scores BatchNorm only)
- ``taylor`` and ``diff-pruning``: I = sum_{conv/linear k} (w_k g_k)^2 + sum_{GroupNorm k} |w_k g_k|,
                    the same score for both (``--pruner taylor`` and ``ours`` both build
                    TaylorImportance; taylor sums all timesteps, so it is Diff-Pruning at T = 0)

Both classes score only the layers whose index count is that of the group's first layer (lines 118-122,
422-426): where a skip connection's concatenation joins two halves of one group (the deepest level of
the CIFAR-10 U-Net and of the digits teacher), the layers after it are left out, and so they are here.
The released magnitude then divides a group's scores by their mean (its ``normalizer``), which does
not change which channels a group loses and is left out here. LayerNorm scales, which the released
U-Net does not have, are left out of the released reading.

The gradients come from :func:`accumulate_gradients` (Algorithm 1, lines 1-12).
"""
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from .errors import InputError
from .pipeline import as_diffusion_model, rows_of, to_device
from .progress import bar

CRITERIA = ("random", "magnitude", "taylor", "diff-pruning")
GRADIENT_CRITERIA = ("taylor", "diff-pruning")
SCORE_FORMS = {
    "equation": "the paper's equations (Eq. 5-6 for Taylor, Eq. 10 for Diff-Pruning, the group L2 norm)",
    "released-code": "VainF/Diff-Pruning's ddpm_exp/torch_pruning/importance.py: squared (w g)^2 on convs and "
                     "linears plus |w g| on GroupNorm scales; magnitude without GroupNorm scales",
}


def check_criterion(name: str) -> str:
    if name not in CRITERIA:
        raise InputError(f"unknown criterion {name!r}; choose from {', '.join(CRITERIA)}")
    return name


def check_score_form(name: str) -> str:
    if name not in SCORE_FORMS:
        raise InputError(f"unknown score form {name!r}; choose from {', '.join(SCORE_FORMS)}")
    return name


MAX_TIMESTEPS_PER_FORWARD = 8  # the digits teacher ran no faster with more (benchmarks/algorithm1_chunks.py)
CPU_FORWARD_BYTES = 2**30  # saved tensors of one forward on a CPU: with more, the CIFAR-10 U-Net ran slower


def chunk_losses(unet, x0, noise, timesteps: list, alphas_cumprod, conditions: dict) -> torch.Tensor:
    """L_t of Eq. 2 for each t in ``timesteps`` from one forward, ||eps - eps_theta(sqrt(a_t) x0 + sqrt(1 - a_t) eps,
    t)||^2 (mean over the batch): the batch is repeated once per timestep, with its one noise eps.

    ``x0`` is in the U-Net's input space (latents of a latent model); ``conditions`` its keyword inputs.
    """
    k, n = len(timesteps), len(x0)
    a = alphas_cumprod[list(timesteps)].to(x0.device, x0.dtype).view(k, 1, *[1] * (x0.ndim - 1))
    noisy = (a.sqrt() * x0 + (1 - a).sqrt() * noise).flatten(0, 1)
    steps = torch.as_tensor(timesteps, dtype=torch.long, device=x0.device).repeat_interleave(n)
    rows = torch.arange(n).repeat(k)
    prediction = unet(noisy, steps, **to_device(rows_of(conditions, n, rows), x0.device)).sample
    return (prediction.view(k, *x0.shape) - noise).pow(2).flatten(1).mean(1)


def timesteps_per_forward_for(given: int | None, unet, x0, noise, alphas_cumprod, conditions: dict) -> int:
    """``given`` (checked) or, if None, :func:`default_timesteps_per_forward`."""
    if given is None:
        return default_timesteps_per_forward(unet, x0, noise, alphas_cumprod, conditions)
    if given < 1:
        raise InputError(f"timesteps per forward must be >= 1, got {given}")
    return given


def default_timesteps_per_forward(unet, x0, noise, alphas_cumprod, conditions: dict) -> int:
    """Timesteps per forward/backward of Algorithm 1, from the tensors saved for the backward of one timestep
    (measured on a forward of one): on a GPU as many as fit in a quarter of its memory, on a CPU as many as fit
    in :data:`CPU_FORWARD_BYTES` and an eighth of the machine's memory (a larger batch runs slower there once it
    leaves the caches); at most :data:`MAX_TIMESTEPS_PER_FORWARD`. Total memory, not free memory: one machine
    always gets the same chunks, so the same sums."""
    saved = 0

    def count(tensor):
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(count, lambda tensor: tensor):
        chunk_losses(unet, x0, noise, [len(alphas_cumprod) // 2], alphas_cumprod, conditions)
    if x0.device.type == "cuda":
        budget = torch.cuda.get_device_properties(x0.device).total_memory / 4
    else:
        budget = min(CPU_FORWARD_BYTES, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 8)
    return int(max(1, min(MAX_TIMESTEPS_PER_FORWARD, budget // max(saved, 1))))


def algorithm1_batch(model, images, *, seed: int, labels=None, prompts=None):
    """Algorithm 1's fixed inputs: x0 (the encoded batch), its conditions, and the one noise tensor eps (line 3)."""
    x0 = model.encode(images).to(model.device)
    with torch.no_grad():  # inputs of every timestep's loss, not part of what is differentiated (a class embedder's)
        conditions, _ = model.conditions(len(x0), labels=labels, prompts=prompts, seed=seed)
    return x0, conditions, fixed_noise(x0, seed)


@torch.no_grad()
def timestep_losses(model, images, alphas_cumprod=None, *, timesteps, seed: int = 0, progress: bool = True,
                    labels=None, prompts=None, timesteps_per_forward: int | None = None):
    """L_t for each t in ``timesteps`` with one batch and one fixed noise (the curve of Figure 5).

    ``model``: a DiffusionModel or a bare U-Net; ``images`` in [-1, 1], encoded first for a latent model;
    ``alphas_cumprod`` defaults to the model's schedule; ``timesteps_per_forward`` share a forward (default: as
    :func:`accumulate_gradients` chooses).
    """
    model = as_diffusion_model(model)
    alphas_cumprod = model.schedule.alphas_cumprod if alphas_cumprod is None else alphas_cumprod
    model.unet.eval()
    x0, conditions, noise = algorithm1_batch(model, images, seed=seed, labels=labels, prompts=prompts)
    chunk = timesteps_per_forward_for(timesteps_per_forward, model.unet, x0, noise, alphas_cumprod, conditions)
    timesteps = list(timesteps)
    chunks = [timesteps[i:i + chunk] for i in range(0, len(timesteps), chunk)]
    losses = torch.cat([chunk_losses(model.unet, x0, noise, ts, alphas_cumprod, conditions).cpu()
                        for ts in bar(chunks, desc=f"L_t ({chunk} timesteps a forward)", progress=progress)])
    for t, value in zip(timesteps, losses.tolist()):
        check_finite_loss(value, t)
    return losses


def check_finite_loss(value: float, t: int) -> None:
    if not math.isfinite(value):
        raise InputError(f"L_t is not finite at t = {t}: the U-Net's output is not (a UNet2DModel with a Fourier time "
                         "embedding takes log t, -inf at t = 0: a continuous-time score model, not a DDPM)")


def fixed_noise(images, seed: int):
    """The one noise tensor eps of Algorithm 1, line 3, reused at every timestep; a function of the seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(images.shape, generator=generator).to(images.device, images.dtype)


@dataclass
class GradientReport:
    """What :func:`accumulate_gradients` did: the timesteps whose gradients were summed, and every L_t seen."""
    timesteps_used: list = field(default_factory=list)
    losses: dict = field(default_factory=dict)  # t -> L_t for every visited t, the stopping one included
    loss_max: float = 0.0
    stopped_at: int | None = None  # the first t with L_t / L_max <= T (not used), None if none


def accumulate_gradients(model, images, alphas_cumprod=None, *, threshold: float = 0.0, stride: int = 1,
                         max_steps: int | None = None, seed: int = 0, progress: bool = True,
                         timesteps_per_forward: int | None = None,
                         snapshot_if=None, snapshot=None, labels=None, prompts=None) -> GradientReport:
    """Sum dL_t/dtheta into ``param.grad`` over the pruned timesteps (Algorithm 1, lines 1-12; Eq. 10).

    Timesteps are visited in ascending order t = 0, stride, 2*stride, ... with one batch of clean
    ``images`` and one noise tensor (from ``seed``) reused at every t; the model is in eval mode. After
    computing L_t, L_max = max(L_max, L_t); if L_t / L_max <= threshold the loop stops and that t is
    *not* used (the paper's Algorithm 1 breaks before back-propagating; Eq. 10 keeps L_t/L_max > T).
    The official code back-propagates first, so it keeps one timestep more. ``threshold=0`` uses all
    timesteps (plain Taylor over T steps); ``max_steps`` caps the number used (Figure 5): the sums are then those a
    pass without the cap holds once it has used that many, bit for bit.

    ``timesteps_per_forward`` share one forward (the batch repeated, :func:`chunk_losses`; default
    :func:`default_timesteps_per_forward`): the rule above is applied to their losses one t at a time, and one
    backward of the sum of the kept ones adds their gradients, so the timesteps used are the loop's and the
    sums equal its sums to float rounding.
    ``snapshot(report, t)``, if given (with ``snapshot_if``), is called at each t where ``snapshot_if(report, t,
    ratio)`` is true, once L_t is known and before t is used or the loop stops, with ``param.grad`` holding the
    sums over ``report.timesteps_used`` (a pass at a larger T would stop there; or k timesteps are summed,
    Figure 5), bit for bit those of a pass that stops there (:func:`sums_so_far`).
    ``model`` is a DiffusionModel (or a bare U-Net): a latent model diffuses the *encoded* batch, and
    ``labels`` / ``prompts`` condition it (default: the model's, see ``DiffusionModel.conditions``);
    ``alphas_cumprod`` defaults to the model's schedule. The sums land in ``model.unet``'s ``param.grad``.
    """
    if not 0.0 <= threshold < 1.0:
        raise InputError(f"threshold must be in [0, 1), got {threshold}")
    if stride < 1:
        raise InputError(f"stride must be >= 1, got {stride}")
    model = as_diffusion_model(model)
    alphas_cumprod = model.schedule.alphas_cumprod if alphas_cumprod is None else alphas_cumprod
    unet = model.unet
    unet.eval()
    unet.zero_grad(set_to_none=True)
    x0, conditions, noise = algorithm1_batch(model, images, seed=seed, labels=labels, prompts=prompts)
    chunk = timesteps_per_forward_for(timesteps_per_forward, unet, x0, noise, alphas_cumprod, conditions)
    steps = list(range(0, len(alphas_cumprod), stride))
    limit = len(steps) if max_steps is None else min(max_steps, len(steps))
    report = GradientReport()
    loop = bar(total=limit, desc=f"Taylor over timesteps (T={threshold}, {chunk} a forward)", progress=progress)
    done = False
    while not done and len(report.losses) < len(steps):
        visited = len(report.losses)
        timesteps = steps[visited:][:chunk]  # whole chunks under a cap too: a pass capped at k sums as a longer
        # pass has summed at its k-th timestep (the chunk's forward is the same), bit for bit
        losses = chunk_losses(unet, x0, noise, timesteps, alphas_cumprod, conditions)
        kept = []  # this chunk's losses used so far, back-propagated together at its end
        for t, loss, value in zip(timesteps, losses, losses.tolist()):
            check_finite_loss(value, t)
            report.losses[t] = value
            report.loss_max = max(report.loss_max, value)
            ratio = value / report.loss_max
            if snapshot is not None and snapshot_if(report, t, ratio):
                with sums_so_far(unet, kept):
                    snapshot(report, t)
            if ratio <= threshold:
                report.stopped_at, done = t, True
                break
            kept.append(loss)
            report.timesteps_used.append(t)
            if len(report.timesteps_used) >= limit:
                done = True
                break
        if kept:
            torch.stack(kept).sum().backward()
        loop.update(len(report.losses) - visited)
        loop.set_postfix(ratio=f"{ratio:.3f}")
    loop.close()
    return report


@contextmanager
def sums_so_far(unet, kept: list):
    """``param.grad`` plus the gradient of the sum of ``kept`` (a chunk's losses not yet back-propagated), for the
    duration of the block; then ``param.grad`` as before. The same addition as the chunk's own backward would make
    if the loop stopped here, so a snapshot holds the very numbers of a pass that stops here."""
    if not kept:
        yield
        return
    parameters = [p for p in unet.parameters() if p.requires_grad]
    before = [p.grad for p in parameters]
    grads = torch.autograd.grad(torch.stack(kept).sum(), parameters, retain_graph=True, allow_unused=True)
    for p, grad in zip(parameters, grads):
        p.grad = grad if p.grad is None else p.grad if grad is None else p.grad + grad
    try:
        yield
    finally:
        for p, grad in zip(parameters, before):
            p.grad = grad


class StructureImportance(tp.importance.Importance):
    """Scores every channel of a Torch-Pruning group with one of :data:`CRITERIA`, in one of the
    :data:`SCORE_FORMS` (see module doc).

    The per-weight terms are summed over all the weights of the structure, across every layer of the
    group; biases are left out, as in Eq. 7 (theta_i is the row of weights) and in the released code.
    """

    def __init__(self, criterion: str, seed: int = 0, score_form: str = "equation"):
        self.criterion = check_criterion(criterion)
        self.score_form = check_score_form(score_form)
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor:
        width = len(group[0].idxs)
        if self.criterion == "random":
            return torch.rand(width, generator=self.generator)
        released = self.score_form == "released-code"
        total, layers = torch.zeros(width, dtype=torch.float64), 0
        for item in group:
            layer, fn = item.dep.target.module, item.dep.handler
            weights = structure_weights(layer, fn, item.idxs)
            norm = isinstance(layer, (nn.GroupNorm, nn.LayerNorm))
            if weights is None or released and (len(item.idxs) != width or norm and (
                    self.criterion == "magnitude" or not isinstance(layer, nn.GroupNorm))):
                continue
            w, grad = weights
            if self.criterion == "magnitude":
                terms = w.pow(2)
            elif grad is None:
                raise RuntimeError(f"criterion {self.criterion!r} needs gradients: call accumulate_gradients first")
            elif released:
                terms = (w * grad).abs() if norm else (w * grad).pow(2)
            else:
                terms = w * grad if self.criterion == "taylor" else (w * grad).abs()
            root = torch.as_tensor(item.root_idxs)
            total.index_add_(0, root, terms.reshape(len(root), -1).sum(1).double())
            layers += 1
        if self.criterion == "magnitude":
            return total / max(layers, 1) if released else total.sqrt()
        return total.abs() if self.criterion == "taylor" and not released else total


def structure_weights(layer, fn, idxs):
    """The weights (and their gradients) that pruning ``idxs`` with handler ``fn`` removes from ``layer``.

    Returned with the pruned channel as the first dimension; None for layers without weights there.
    """
    name = getattr(fn, "__name__", "")
    if isinstance(layer, (nn.Conv2d, nn.Linear)):
        weight, grad = layer.weight, layer.weight.grad
        if name == "prune_in_channels":
            weight, grad = weight.transpose(0, 1), None if grad is None else grad.transpose(0, 1)
        elif name != "prune_out_channels":
            return None
    elif isinstance(layer, (nn.GroupNorm, nn.LayerNorm)) and layer.weight is not None:
        weight, grad = layer.weight, layer.weight.grad
    else:
        return None
    idxs = torch.as_tensor(idxs)
    return weight.detach()[idxs], None if grad is None else grad[idxs]
