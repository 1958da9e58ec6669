"""Helpers shared by the directions tests."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core box: one intra-op thread avoids OpenMP contention (10x faster here).

    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``; the old count is restored after.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
