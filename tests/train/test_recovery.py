"""Recovery and distributed tests: SIGKILL + resume gives bit-identical weights, SIGTERM/SIGINT
save a checkpoint, and 2-process DDP (gloo) stays in sync (BatchNorm statistics included),
matches a single-process run and writes files from rank 0 only.

Nothing here races the trainer: it stops itself right after a chosen checkpoint
(``largekernel.train.testing_hooks``) and the test signals it there; torchrun picks its own port.

Run as a script (``python test_recovery.py MODE OUT [key=value ...]``) this file trains a tiny
model on synthetic data; the tests start it in subprocesses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

HERE = Path(__file__).resolve()
INFO = {"name": "toy", "num_classes": 3, "in_chans": 1, "image_size": 8,
        "class_names": ["a", "b", "c"], "mean": [0.0], "std": [1.0]}


class ToyData(Dataset):
    """Deterministic 3-class 1x8x8 images: class c has a bright blob at a class-specific place."""

    def __init__(self, n: int, seed: int, flip: bool = True) -> None:
        self.flip = flip
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 3, (n,), generator=g)
        self.x = 0.3 * torch.randn(n, 1, 8, 8, generator=g)
        for i, c in enumerate(self.y.tolist()):
            self.x[i, 0, 2 * c:2 * c + 3, 1:4] += 1.0

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        # a random flip from the *global* RNG: resume must restore it exactly
        x = self.x[i]
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, int(self.y[i])


class ToyNet(nn.Module):
    """``bn``: a BatchNorm in the path. ``stats_bn``: a BatchNorm that only tracks statistics (its
    output is multiplied by zero), so DDP keeps per-rank running statistics without changing the
    numbers the ranks train on; the trainer must average them across ranks."""

    def __init__(self, bn: bool = True, dropout: float = 0.2, stats_bn: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8) if bn else nn.Identity()
        self.stats = nn.BatchNorm2d(8, affine=False) if stats_bn else None
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        if os.environ.get("LK_TEST_SLOW"):
            time.sleep(float(os.environ["LK_TEST_SLOW"]))  # gives the tests time to signal mid-run
        h = torch.relu(self.norm(self.conv(x)))
        if self.stats is not None:
            h = h + 0.0 * self.stats(h)
        return self.fc(self.drop(h.mean(dim=(2, 3))))


def _main(argv: list[str]) -> int:
    """Script entry: MODE OUT [overrides]; MODE in {train, ddp}."""
    torch.set_num_threads(1)
    mode, out, overrides = argv[0], argv[1], argv[2:]
    from largekernel.train import TrainConfig, TrainingInterrupted, apply_overrides
    from largekernel.train.trainer import Trainer

    cfg = apply_overrides(TrainConfig(), [
        f"output={out}", "accelerate=false", "batch_size=8", "epochs=3", "lr=0.05", "warmup_steps=2",
        "quiet=true", "plots=false", "augment=false", "ema=true", "ema_decay=0.9", *overrides])
    bn = mode != "ddp"
    torch.manual_seed(cfg.seed)
    model = ToyNet(bn=bn, dropout=0.0 if mode == "ddp" else 0.2, stats_bn=not bn)
    trainer = Trainer(cfg, model=model, train_set=ToyData(48, 1, flip=bn), eval_set=ToyData(15, 2, flip=False),
                      data_info=INFO, model_config={"name": "toy", "kwargs": {}})
    try:
        trainer.fit()
    except TrainingInterrupted as err:
        return 128 + err.signum
    finally:
        trainer.close()
    torch.save(trainer.raw_model.state_dict(), Path(out) / f"final_rank{trainer.dist.rank}.pt")
    return 0


def _script(mode: str, out: Path, *overrides: str, slow: float | None = None,
            stop_after: int | None = None) -> subprocess.Popen:
    from largekernel.train.testing_hooks import STOP_AFTER_STEP_ENV

    env = dict(os.environ)
    env.pop("LK_TEST_SLOW", None)
    env.pop(STOP_AFTER_STEP_ENV, None)
    if slow:
        env["LK_TEST_SLOW"] = str(slow)
    if stop_after is not None:
        env[STOP_AFTER_STEP_ENV] = str(stop_after)
    return subprocess.Popen([sys.executable, str(HERE), mode, str(out), *overrides], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, timeout: float = 120) -> int:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"subprocess timed out:\n{out.decode(errors='replace')[-3000:]}")
    if proc.returncode not in (0, 128 + signal.SIGTERM, 128 + signal.SIGINT):
        pytest.fail(f"subprocess failed ({proc.returncode}):\n{out.decode(errors='replace')[-3000:]}")
    return proc.returncode


def _step_of_latest(run: Path) -> int:
    from largekernel.train.checkpointing import latest_checkpoint

    latest = latest_checkpoint(run)
    return -1 if latest is None else int(latest.stem.split("_")[1])


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def _stopped_after_checkpoint(proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until the trainer stopped itself (testing_hooks: SIGSTOP right after a checkpoint)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status = os.waitpid(proc.pid, os.WUNTRACED | os.WNOHANG)
        if pid == 0:
            time.sleep(0.05)
            continue
        if os.WIFSTOPPED(status):
            return
        proc.returncode = os.waitstatus_to_exitcode(status)
        pytest.fail(f"trainer ended ({proc.returncode}) before the stop hook fired: "
                    f"{proc.stdout.read().decode(errors='replace')[-3000:]}")
    proc.kill()
    pytest.fail("timed out waiting for the trainer's stop hook")


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    # 48 samples / batch 8 = 6 steps per epoch, 18 steps in all; checkpoints every 4 steps. The
    # trainer stops itself right after the step-8 checkpoint (mid epoch 2) and is killed there:
    # no timing window to hit, however busy the machine
    common = ("checkpoint_every=4",)
    reference = _script("train", tmp_path / "ref", *common)
    killed = _script("train", tmp_path / "killed", *common, stop_after=8)
    _stopped_after_checkpoint(killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    assert killed.returncode == -signal.SIGKILL
    assert _step_of_latest(tmp_path / "killed") == 8
    assert not (tmp_path / "killed" / "final_rank0.pt").exists()
    _finish(_script("train", tmp_path / "killed", *common, "resume=true"))
    assert _finish(reference) == 0
    ref = torch.load(tmp_path / "ref" / "final_rank0.pt", weights_only=True)
    res = torch.load(tmp_path / "killed" / "final_rank0.pt", weights_only=True)
    _assert_same_state(ref, res)  # exact: same data order, RNG streams, optimiser state
    # the final training checkpoints (incl. EMA and history) also agree
    from largekernel.train.checkpointing import load_training_checkpoint

    a = load_training_checkpoint(tmp_path / "ref" / "train_checkpoint.pt")
    b = load_training_checkpoint(tmp_path / "killed" / "train_checkpoint.pt")
    _assert_same_state(a["ema"]["model"], b["ema"]["model"])
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_checkpoint_and_resume_completes(tmp_path, signum):
    run = tmp_path / "run"
    # the trainer stops itself after the epoch-end checkpoint of step 6; the signal is pending
    # when it continues, so the guard must save at the very next optimiser step
    proc = _script("train", run, "epochs=50", stop_after=6)
    _stopped_after_checkpoint(proc)
    proc.send_signal(signum)
    proc.send_signal(signal.SIGCONT)
    assert _finish(proc) == 128 + signum
    step = _step_of_latest(run)
    assert step == 7
    from largekernel.train.checkpointing import latest_checkpoint, load_training_checkpoint

    state = load_training_checkpoint(latest_checkpoint(run))
    assert state["progress"]["step"] == step
    # resume with a shorter budget: max_steps caps the run right after the saved step
    _finish(_script("train", run, "epochs=50", "resume=true", f"max_steps={step + 2}"))
    final = load_training_checkpoint(run / "train_checkpoint.pt")
    assert final["progress"]["step"] == step + 2


def test_ddp_two_processes_match_single_process(tmp_path):
    common = ("epochs=2", "ema=false", "eval_every=1")
    single = _script("ddp", tmp_path / "single", *common)
    env = dict(os.environ)
    env.pop("LK_TEST_SLOW", None)
    ddp = subprocess.Popen(
        # --standalone: torchrun's own rendezvous binds port 0, so no port is picked before it
        # is bound (a free port chosen here could be taken by another process in between)
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(HERE), "ddp",
         str(tmp_path / "ddp"), *common],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _finish(ddp, timeout=180)
    _finish(single)
    r0 = torch.load(tmp_path / "ddp" / "final_rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "ddp" / "final_rank1.pt", weights_only=True)
    _assert_same_state(r0, r1)  # ranks in sync, BatchNorm running statistics included (averaged)
    assert "stats.running_mean" in r0 and not torch.equal(r0["stats.running_var"], torch.ones(8))
    ref = torch.load(tmp_path / "single" / "final_rank0.pt", weights_only=True)
    for k in ref:  # same global batch, same samples per step: equal up to reduction order
        if k.startswith("stats."):  # per-rank statistics of half batches: averaged, not the same numbers
            continue
        torch.testing.assert_close(r0[k], ref[k], rtol=1e-4, atol=1e-5)
    # rank 0 alone wrote the artefacts: the same files as the single-process run (final_rank1.pt
    # is this script's own output), and no file or directory names rank 1
    ddp_files = {p.relative_to(tmp_path / "ddp").as_posix() for p in (tmp_path / "ddp").rglob("*")}
    single_files = {p.relative_to(tmp_path / "single").as_posix() for p in (tmp_path / "single").rglob("*")}
    assert (tmp_path / "ddp" / "metrics.json").is_file()
    assert ddp_files - {"final_rank1.pt"} == single_files
    assert not [f for f in ddp_files - {"final_rank1.pt"} if "rank1" in f or "rank_1" in f]
    import json

    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    single_metrics = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["final"]["count"] == 15  # odd: ranks get 8 and 7, none repeated
    assert metrics["final"]["top1"] == pytest.approx(single_metrics["final"]["top1"])
    # the training checkpoint keeps each rank's RNG state (for exact DDP resumption)
    from largekernel.train.checkpointing import load_training_checkpoint

    state = load_training_checkpoint(tmp_path / "ddp" / "train_checkpoint.pt")
    assert len(state["rng_per_rank"]) == 2 and state["progress"]["world_size"] == 2
    assert load_training_checkpoint(tmp_path / "single" / "train_checkpoint.pt")["rng_per_rank"] is None


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
