"""Shared fixtures: one MNIST-1D cache per test session (generated once, ~1 s),
and a one-thread torch for small CPU training runs (tiny ops on a shared,
busy machine are many times faster without intra-op threads).

The longest test files run first: `make test` hands whole files to two
workers in collection order, and a long file handed out last keeps one
worker busy while the other has nothing left (longest first is the classic
way to keep that tail short). Order within a file is unchanged."""
from __future__ import annotations

import pytest
import torch


# the files that take over a minute of a full run, longest first
LONGEST_FIRST = ("test_interrupts.py", "test_sweeps.py", "test_postgres.py", "test_packed_sweep.py",
                 "test_object_storage.py", "test_stoppers.py", "test_cluster.py", "test_server.py",
                 "test_exp_regimes.py", "test_exp_early_phase.py", "test_exp_large_lr.py", "test_ui.py",
                 "test_plugins.py", "test_imports.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))     # stable: file order kept


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
