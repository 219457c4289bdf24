"""The collective helpers of ``largekernel.train.distributed`` in a real 2-process gloo group.

The group is rendezvoused through a file store, so no TCP port is picked (nothing to race for).
Each rank starts from its own BatchNorm statistics; after ``sync_bn_stats`` both must hold their
average, computed here independently from the same seeds.
"""

from __future__ import annotations

import subprocess
import sys

import torch

WORKER = r"""
import sys

import torch
import torch.distributed as dist
from torch import nn

from largekernel.train.distributed import all_reduce_sum, broadcast_object, sync_bn_stats

rank, store, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
torch.manual_seed(rank)
model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), nn.BatchNorm1d(4, track_running_stats=False))
with torch.no_grad():
    model[1].running_mean.copy_(torch.randn(3))
    model[1].running_var.copy_(torch.rand(3) + 0.5)
sync_bn_stats(model)
total = all_reduce_sum(torch.tensor([rank + 1.0]))
obj = broadcast_object({"from": rank})
torch.save({"mean": model[1].running_mean, "var": model[1].running_var,
            "conv": model[0].weight.detach(), "sum": total, "obj": obj}, f"{out}_{rank}.pt")
dist.destroy_process_group()
"""


def test_sync_bn_stats_averages_running_statistics_over_ranks(tmp_path):
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(r), str(tmp_path / "store"), str(tmp_path / "rank")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for r in range(2)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out.decode(errors="replace")[-3000:]
    res = [torch.load(tmp_path / f"rank_{r}.pt", weights_only=True) for r in range(2)]
    # the same draws the workers made, in the same order (conv init first)
    expected = {"mean": [], "var": []}
    for r in range(2):
        torch.manual_seed(r)
        torch.nn.Conv2d(2, 3, 1)
        expected["mean"].append(torch.randn(3))
        expected["var"].append(torch.rand(3) + 0.5)
    for key in ("mean", "var"):
        avg = (expected[key][0] + expected[key][1]) / 2
        for r in range(2):
            torch.testing.assert_close(res[r][key], avg, rtol=1e-6, atol=1e-7)
    # parameters are not statistics: left as they were on each rank
    assert not torch.equal(res[0]["conv"], res[1]["conv"])
    assert [float(x["sum"]) for x in res] == [3.0, 3.0]
    assert [x["obj"] for x in res] == [{"from": 0}, {"from": 0}]
