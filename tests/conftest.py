"""Shared fixtures: one MNIST-1D cache per test session (generated once, ~1 s),
and a one-thread torch for small CPU training runs (tiny ops on a shared,
busy machine are many times faster without intra-op threads)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def mnist1d_cache(tmp_path_factory) -> str:
    """A cache dir holding the generated MNIST-1D file, shared by every test."""
    from dynamics_core.config import DataConfig
    from dynamics_core.data import mnist1d

    root = tmp_path_factory.mktemp("mnist1d_cache")
    mnist1d.load(DataConfig(), root)
    return str(root)


@pytest.fixture(scope="module")
def single_thread():
    """torch intra-op threads = 1 for the module, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
