"""Several calls at once in worker processes, each with one torch thread (diffprune_core.workers)."""
from functools import partial

import pytest
import torch

from diffprune_core.errors import InputError
from diffprune_core.workers import in_workers, one_torch_thread


@pytest.mark.parametrize("workers", [1, 2])
def test_stages_return_every_call_in_order_with_one_thread(workers):
    stages = [[partial(pow, 2, k) for k in range(5)], [torch.get_num_threads, torch.get_num_threads]]
    threads = torch.get_num_threads()
    assert in_workers(stages, workers=workers, progress=False) == [[1, 2, 4, 8, 16], [1, 1]]
    assert torch.get_num_threads() == threads, "this process keeps its threads"


def test_a_failed_call_raises_here_and_workers_must_be_positive():
    with pytest.raises(ValueError, match="invalid literal"):
        in_workers([[partial(int, "1"), partial(int, "x")]], workers=2, progress=False)
    with pytest.raises(InputError, match="workers must be at least 1"):
        in_workers([[partial(int, "1")]], workers=0)
    assert in_workers([[], []], progress=False) == [[], []]


def test_one_torch_thread_restores_the_thread_count_after_an_error():
    threads = torch.get_num_threads()
    with pytest.raises(RuntimeError), one_torch_thread():
        assert torch.get_num_threads() == 1
        raise RuntimeError
    assert torch.get_num_threads() == threads
