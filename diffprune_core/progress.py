"""Progress bars of the long loops: Algorithm 1, fine-tuning (with its loss), DDIM sampling, LD-Pruner's scoring.

One bar per loop with tqdm's rate and ETA: a text bar in a terminal (the CLI), a widget in JupyterLab
(``tqdm.auto`` with ipywidgets). A function's ``progress=False`` turns its bar off; the environment
variable ``DIFFPRUNE_PROGRESS=0`` turns every bar off, which ``tools/build_book.sh`` and the smoke
build set so that no bar is stored in a page of the book.
"""
import os

from tqdm.auto import tqdm


def bar(iterable=None, *, progress: bool = True, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)``, off when ``progress`` is false or ``DIFFPRUNE_PROGRESS`` is ``0``."""
    return tqdm(iterable, disable=not progress or os.environ.get("DIFFPRUNE_PROGRESS") == "0", **kwargs)
