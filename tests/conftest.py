"""Shared fixtures: one MNIST-1D cache per test session (generated once, ~1 s),
a one-thread torch for small CPU training runs (tiny ops on a shared,
busy machine are many times faster without intra-op threads), and the
empty MLflow store that new sqlite stores copy, cached per test session
(`sweeps.tracking.schema`) rather than in the user's cache."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def schema_cache(tmp_path_factory):
    """$DYNSWEEP_SCHEMA_CACHE for the session: every process a test starts inherits it."""
    import os

    from sweeps.tracking.schema import CACHE_ENV

    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("mlflow_schema"))
    yield
    if before is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = before


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
