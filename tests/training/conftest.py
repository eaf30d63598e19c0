"""Training tests run the loop in-process too; keep its process-wide settings from leaking into other tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_and_restore(monkeypatch):
    # Tiny models gain nothing from a second thread, and on a shared machine an oversubscribed OpenMP
    # pool is many times slower. train() reads GENIE_NUM_THREADS (also passed on to subprocesses).
    monkeypatch.setenv("GENIE_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
