"""Experiments fixtures: one torch thread (tiny models; a shared machine), restored afterwards. The tiny
bundles (tiny_bundle, stride2_bundle) and stores (tiny_store) come from tests/conftest.py."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    import torch

    monkeypatch.setenv("GENIE_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
