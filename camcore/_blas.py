"""Small dense linear algebra on one BLAS thread.

numpy's OpenBLAS splits even a 64x64 eigendecomposition across every core, and hands
work between its threads by spinning. Beside TensorFlow's own thread pools, or on a
machine where anything else runs, the hand-off dominates: measured on the project's
2-core machine under load, ``eigh`` of a 64x64 Gram matrix took 46 ms on two threads and
0.36 ms on one; a 256-channel Gram product 25 ms against 1 ms. Matrices this size gain
nothing from a second thread, so camcore runs them on one.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController


@functools.cache
def _controller() -> ThreadpoolController:
    # Finding the loaded BLAS libraries costs about 2 ms; limiting them through a known
    # controller costs 14 us. The controller only describes the process's libraries.
    return ThreadpoolController()


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with every loaded BLAS library limited to one thread."""
    with _controller().limit(limits=1, user_api="blas"):
        yield
