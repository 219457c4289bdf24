"""``largekernel.train.distributed`` end to end: ``init_distributed`` from a torchrun-style environment.

The library's collective helpers are exercised in a real 2-process gloo group whose workers are
started with ``multiprocessing``'s *spawn* method (so they import the same ``largekernel`` as the
test, including a mutated copy under mutation testing). The rendezvous is the one ``torchrun``
uses: the test hosts a ``TCPStore`` on port 0 (the OS picks a free port, nothing to race for) and
the workers connect to it as agents' workers do (``TORCHELASTIC_USE_AGENT_STORE``). Each worker
starts ``init_distributed`` from the environment variables torchrun sets, then runs every helper;
the expected values are computed here from the same seeds.
"""

from __future__ import annotations

import datetime
import multiprocessing as mp
import os
import queue

import pytest
import torch
import torch.distributed as dist
from torch import nn

from largekernel.train.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup_distributed,
    init_distributed,
    sync_bn_stats,
)

WORLD = 2


def _stats_model(seed: int) -> nn.Module:
    """A conv, a tracked BN with random statistics, a BN without running statistics."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), nn.BatchNorm1d(4, track_running_stats=False))
    with torch.no_grad():
        model[1].running_mean.copy_(torch.randn(3))
        model[1].running_var.copy_(torch.rand(3) + 0.5)
    return model


def _worker(rank: int, port: int, results) -> None:
    os.environ.update({
        "WORLD_SIZE": str(WORLD), "RANK": str(rank), "LOCAL_RANK": str(rank),
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
        "TORCHELASTIC_USE_AGENT_STORE": "True", "TORCHELASTIC_RESTART_COUNT": "0",
    })
    if rank == 0:  # a launcher that sets no LOCAL_RANK: local rank 0 (rank 1 gets it from LOCAL_RANK)
        del os.environ["LOCAL_RANK"]
    torch.set_num_threads(1)
    try:
        info = init_distributed(torch.device("cpu"))
        out = {
            "info": (info.rank, info.world_size, info.local_rank, info.enabled, info.is_main),
            "backend": dist.get_backend(),
        }
        model = _stats_model(rank)
        sync_bn_stats(model)
        out["mean"], out["var"] = model[1].running_mean.clone(), model[1].running_var.clone()
        out["conv"] = model[0].weight.detach().clone()
        out["sum"] = all_reduce_sum(torch.tensor([rank + 1.0, 10.0 * rank])).clone()
        out["obj0"] = broadcast_object({"from": rank})
        out["obj1"] = broadcast_object(["sent by", rank], src=1)
        # a second call finds the group initialised and must not initialise it again
        again = init_distributed(torch.device("cpu"))
        out["again"] = (again.rank, again.world_size, again.local_rank)
        barrier()
        cleanup_distributed()
        out["after_cleanup"] = dist.is_initialized()
        cleanup_distributed()  # a no-op once the group is gone
        # plain Python values: tensors would travel as shared memory that dies with this process
        results.put((rank, {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in out.items()}))
    except BaseException as err:  # report instead of hanging the parent
        results.put((rank, f"{type(err).__name__}: {err}"))


def test_two_process_gloo_group_from_torchrun_environment(monkeypatch):
    # the same helpers in this (non-distributed) process first: they must leave everything alone.
    # (This also makes mutation testing map this test to every helper: mutmut only sees calls made
    # in the test process, and the workers run the same, possibly mutated, code.)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed(torch.device("cpu")) == DistInfo()
    model, t = _stats_model(0), torch.tensor([1.0, 10.0])
    sync_bn_stats(model)
    assert all_reduce_sum(t) is t and t.tolist() == [1.0, 10.0]
    assert broadcast_object("x", src=1) == "x"
    barrier()
    cleanup_distributed()
    assert torch.equal(model[1].running_mean, _stats_model(0)[1].running_mean)

    store = dist.TCPStore("127.0.0.1", 0, WORLD, is_master=True, timeout=datetime.timedelta(seconds=60),
                          wait_for_workers=False)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, store.port, results)) for r in range(WORLD)]
    for p in procs:
        p.start()
    got = {}
    try:
        for _ in range(WORLD):
            rank, out = results.get(timeout=120)
            got[rank] = out
    except queue.Empty:
        pytest.fail(f"workers did not report: got {sorted(got)}")
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    for rank in range(WORLD):
        assert isinstance(got[rank], dict), got[rank]
    models = [_stats_model(r) for r in range(WORLD)]
    for rank, out in got.items():
        assert out["info"] == (rank, WORLD, rank, True, rank == 0)
        assert out["backend"] == "gloo"
        for key, attr in (("mean", "running_mean"), ("var", "running_var")):
            average = sum(getattr(m[1], attr).double() for m in models) / WORLD
            torch.testing.assert_close(torch.tensor(out[key], dtype=torch.float64), average, rtol=1e-6, atol=1e-7)
        # parameters are not statistics: each rank keeps its own
        assert out["conv"] == models[rank][0].weight.detach().tolist()
        assert out["sum"] == [3.0, 10.0]
        assert out["obj0"] == {"from": 0}
        assert out["obj1"] == ["sent by", 1]
        assert out["again"] == (rank, WORLD, rank)
        assert out["after_cleanup"] is False


def test_single_process_helpers_are_identities(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert not dist.is_initialized()
    assert init_distributed(torch.device("cpu")) == DistInfo(0, 1, 0)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert init_distributed(torch.device("cpu")) == DistInfo(0, 1, 0)
    assert not dist.is_initialized()
    model = _stats_model(3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sync_bn_stats(model)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    t = torch.tensor([1.5, -2.0])
    assert all_reduce_sum(t) is t and t.tolist() == [1.5, -2.0]
    obj = {"a": [1, 2]}
    assert broadcast_object(obj) is obj
    assert broadcast_object(obj, src=1) is obj
    barrier()
    cleanup_distributed()
    assert not dist.is_initialized()


@pytest.mark.parametrize("world,rank,enabled,is_main", [(1, 0, False, True), (2, 0, True, True), (2, 1, True, False),
                                                         (8, 5, True, False)])
def test_dist_info_flags(world, rank, enabled, is_main):
    info = DistInfo(rank=rank, world_size=world, local_rank=rank % 4)
    assert info.enabled is enabled
    assert info.is_main is is_main
    assert DistInfo() == DistInfo(rank=0, world_size=1, local_rank=0)


def test_torchrun_environment_without_torch_distributed_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="^torch.distributed is not available in this PyTorch build$"):
        init_distributed(torch.device("cpu"))
    # the helpers stay no-ops (they must not touch the missing package)
    t = torch.ones(2)
    assert all_reduce_sum(t) is t and broadcast_object(5) == 5
    barrier()
    cleanup_distributed()
    sync_bn_stats(_stats_model(1))


@pytest.mark.parametrize("device,backend,cuda_device", [("cuda", "nccl", 1), ("cpu", "gloo", None)])
def test_backend_and_cuda_device_follow_the_device(monkeypatch, device, backend, cuda_device):
    """Which backend is asked for (NCCL needs a GPU, so torch's calls are stood in for)."""
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls.append(("init", kw)))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    info = init_distributed(torch.device(device))
    assert info == DistInfo(rank=1, world_size=2, local_rank=1)
    expected = ([("set_device", cuda_device)] if cuda_device is not None else []) + [("init", {"backend": backend})]
    assert calls == expected
