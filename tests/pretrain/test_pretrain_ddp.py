"""``largekernel pretrain`` under ``torchrun`` with 2 gloo processes against a 1-process run.

What data parallelism must give, and what is asserted:
* both ranks end with identical weights (DDP averages the gradients; BatchNorm running
  statistics are averaged over ranks before evaluation);
* the ranks draw different masks, and together exactly the masks one process draws for the
  same global batch (each rank keeps its slice of the global batch's masks);
* rank 0 alone writes files: the same set of files as the 1-process run, and rank 1 none.

The weights themselves are not compared with the 1-process run: BatchNorm (in the blocks and
the decoder) normalises each rank's half batch with its own statistics, so the losses differ.
torchrun's ``--standalone`` rendezvous binds port 0 itself, so no port is picked in advance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve()
TINY = dict(depths=[1, 1, 1, 1], dims=[8, 16, 16, 16], kernel_sizes=[[3], [13], [7], [3]], stem_stride=1)
ARGS = ["--model", "unireplknet_a", "--model-kwargs", json.dumps(TINY), "--image-size", "32",
        "--train-subset", "32", "--eval-subset", "12", "--batch-size", "16", "--max-steps", "2", "--epochs", "1",
        "--warmup-steps", "1", "--threads", "1", "--quiet", "--decoder-width", "16", "--recon-images", "2",
        "--no-accelerate", "eval_every=1"]


def _record(side: Path, rank: int, patch=setattr) -> None:
    """Patch the pre-training code to save the first training masks and the final weights of ``rank``."""
    from largekernel.pretrain import model as model_module
    from largekernel.pretrain import trainer as trainer_module

    draw = model_module.MaskedImageModel.random_mask
    masks: list[torch.Tensor] = []

    def random_mask(self, x, generator=None):
        mask = draw(self, x, generator)
        if generator is None and not masks:  # the first training batch (evaluation passes a generator)
            masks.append(mask.clone())
        return mask

    finish = trainer_module.PretrainTrainer._finish

    def _finish(self):
        summary = finish(self)
        torch.save({"masks": masks[0], "state": self.raw_model.state_dict()}, side / f"rank{rank}.pt")
        return summary

    patch(model_module.MaskedImageModel, "random_mask", random_mask)
    patch(trainer_module.PretrainTrainer, "_finish", _finish)


def _worker(side: str, out: str) -> int:
    torch.set_num_threads(1)
    _record(Path(side), int(os.environ.get("RANK", "0")))
    from largekernel.cli import main

    return main(["pretrain", "--output", out, *ARGS])


@pytest.mark.slow
def test_ddp_pretrain_two_ranks_agree_and_only_rank0_writes(tmp_path, monkeypatch):
    side = tmp_path / "side"
    side.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    ddp = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(HERE),
         str(side), str(tmp_path / "ddp")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # meanwhile the 1-process reference, in this process
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    (side / "single").mkdir()
    _record(side / "single", 0, monkeypatch.setattr)
    from largekernel.cli import main

    assert main(["pretrain", "--output", str(tmp_path / "single"), *ARGS]) == 0
    try:
        out, _ = ddp.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        ddp.kill()
        out, _ = ddp.communicate()
    assert ddp.returncode == 0, out.decode(errors="replace")[-4000:]

    r0, r1 = (torch.load(side / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    single = torch.load(side / "single" / "rank0.pt", weights_only=True)
    # identical weights (and averaged BatchNorm statistics) on both ranks
    assert r0["state"].keys() == r1["state"].keys() == single["state"].keys()
    for key in r0["state"]:
        assert torch.equal(r0["state"][key], r1["state"][key]), key
    # each rank hides other patches; together they are the 1-process masks of the global batch
    assert r0["masks"].shape[0] == r1["masks"].shape[0] == 8 and single["masks"].shape[0] == 16
    assert not torch.equal(r0["masks"], r1["masks"])
    assert torch.equal(torch.cat([r0["masks"], r1["masks"]]), single["masks"])

    # rank 0 alone wrote the run's files: the same names as the 1-process run, none of rank 1
    def files(run: Path) -> set[str]:
        return {p.relative_to(run).as_posix() for p in run.rglob("*")}

    assert files(tmp_path / "ddp") == files(tmp_path / "single")
    assert not [f for f in files(tmp_path / "ddp") if "rank1" in f or "rank_1" in f]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 2
    assert metrics["final"]["count"] == 12  # disjoint evaluation shards, every image once
    # the exported encoder is rank 0's backbone
    import largekernel

    enc = largekernel.create_model_from(tmp_path / "ddp" / "encoder.safetensors")
    for key, value in enc.state_dict().items():
        assert torch.equal(value, r0["state"][f"encoder.backbone.{key}"]), key


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1], sys.argv[2]))
