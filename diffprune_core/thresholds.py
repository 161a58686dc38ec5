"""Which timesteps Algorithm 1 keeps, read off a curve of L_t with no back-propagation.

Algorithm 1 (lines 5-9) visits the timesteps in order, updates L_max = max(L_max, L_t) and stops at
the first t with L_t / L_max <= T: that t and every later one are left out (Eq. 10 keeps
L_t / L_max > T). :func:`criteria.accumulate_gradients` applies this rule while it back-propagates;
here it is applied to the losses of :func:`criteria.timestep_losses` (the same batch, noise and
order), so the counts for many thresholds cost one pass of forward calls.
"""
import torch

from .errors import InputError


def relative_losses(losses) -> torch.Tensor:
    """L_t / L_max with L_max the running maximum over the timesteps visited so far (Algorithm 1, line 7)."""
    losses = torch.as_tensor(losses, dtype=torch.float64)
    return losses / torch.cummax(losses, dim=0).values


def timesteps_kept(losses, threshold: float) -> int:
    """How many leading timesteps Algorithm 1 uses at threshold T: those before the first L_t / L_max <= T."""
    if not 0.0 <= threshold < 1.0:
        raise InputError(f"threshold must be in [0, 1), got {threshold}")
    stops = torch.nonzero(relative_losses(losses) <= threshold)
    return int(stops[0]) if len(stops) else len(losses)
