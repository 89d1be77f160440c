"""Pinned-host parking of model weights: values survive the round trip, buffers are reused."""
import pytest
import torch

from backend.runtime.offload import PinnedHost


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 4))
    return net.eval()


def test_without_cuda_parking_leaves_host_tensors_alone():
    net = model()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    host = PinnedHost()
    host.park([net])
    host.restore([net], torch.device("cpu"))
    assert host.nbytes == 0
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.cuda
def test_park_and_restore_round_trip_on_cuda():
    device = torch.device("cuda")
    net = model().to(device)
    x = torch.randn(5, 8, device=device)
    want = net(x)
    host = PinnedHost()
    for _ in range(2):  # the second round reuses the page-locked buffers
        host.park([net])
        assert all(p.device.type == "cpu" and p.is_pinned() for p in net.parameters())
        assert all(b.device.type == "cpu" for b in net.buffers())
        first = host.nbytes
        host.restore([net], device)
        assert all(p.is_cuda for p in net.parameters()) and host.nbytes == first
        assert torch.equal(net(x), want)
    with torch.no_grad():
        net[0].weight.add_(1.0)  # weights changed on the device (a LoRA): parking copies them again
    changed = net(x)
    host.park([net])
    host.restore([net], device)
    assert torch.equal(net(x), changed)
