import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread_torch():
    """The tiny models gain nothing from intra-op threads, and on a busy 2-core machine the
    thread pool's spinning makes them 10-30x slower; run this folder's tests on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
