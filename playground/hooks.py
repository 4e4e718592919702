"""Forward hooks on a PyTorch model that keep only the calling thread's calls (the model is shared between threads)."""

from __future__ import annotations

import threading
from contextlib import contextmanager


@contextmanager
def capture_input(module):
    """Collect the first positional input of `module`'s calls made on this thread while the block runs.

    The model is shared between threads (a generation may be running beside an analysis): the hook
    keeps only this thread's calls.
    """
    thread, seen = threading.get_ident(), []

    def hook(_module, args):
        if threading.get_ident() == thread:
            seen.append(args[0])

    handle = module.register_forward_pre_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()
