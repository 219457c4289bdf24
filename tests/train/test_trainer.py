"""In-process trainer tests on a tiny model: accumulation equivalence, AMP, options, errors."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from largekernel.train import TrainConfig, apply_overrides
from largekernel.train.trainer import Trainer

INFO = {"name": "toy", "num_classes": 3, "in_chans": 1, "image_size": 8,
        "class_names": ["a", "b", "c"], "mean": [0.0], "std": [1.0]}


def _data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = 0.3 * torch.randn(n, 1, 8, 8, generator=g)
    for i, c in enumerate(y.tolist()):
        x[i, 0, 2 * c:2 * c + 3, 1:4] += 1.0
    return TensorDataset(x, y)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)  # position-sensitive: the class is where the blob is

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _trainer(tmp_path, *overrides: str, name: str = "run", n_train: int = 32) -> Trainer:
    cfg = apply_overrides(TrainConfig(), [
        f"output={tmp_path / name}", "accelerate=false", "epochs=2", "batch_size=8", "lr=0.05",
        "warmup_steps=1", "quiet=true", "plots=false", *overrides])
    torch.manual_seed(0)
    return Trainer(cfg, model=_Net(), train_set=_data(n_train, 1), eval_set=_data(12, 2), data_info=INFO,
                   model_config={"name": "toy", "kwargs": {}})


def _fit(trainer: Trainer) -> dict:
    try:
        return trainer.fit()
    finally:
        trainer.close()


def test_gradient_accumulation_equals_large_batch(tmp_path):
    big = _trainer(tmp_path, "batch_size=8", "weight_decay=0.0", name="big")
    _fit(big)
    acc = _trainer(tmp_path, "batch_size=4", "accum_steps=2", "weight_decay=0.0", name="acc")
    _fit(acc)
    assert acc.step == big.step == 8
    for (k, a), b in zip(acc.raw_model.state_dict().items(), big.raw_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)


def test_training_learns_and_writes_summary(tmp_path):
    t = _trainer(tmp_path, "epochs=6", "ema=true", "ema_decay=0.5", "clip_grad=1.0", "label_smoothing=0.1")
    summary = _fit(t)
    assert summary["final"]["top1"] >= 0.9  # an easy, separable problem
    assert summary["weights"] in ("model", "ema") and summary["ema"] is not None
    assert len(summary["history"]) == 6 and summary["steps"] == 24
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["final"]["top1"] == summary["final"]["top1"]


@pytest.mark.parametrize("overrides", [["amp=bf16"], ["mixup=0.4", "cutmix=1.0"], ["optimizer=sgd", "max_steps=3"]])
def test_options_run(tmp_path, overrides):
    t = _trainer(tmp_path, *overrides)
    dtypes = set()  # what the layers really computed in (amp=bf16 must autocast them)
    hooks = [m.register_forward_hook(lambda m, i, o: dtypes.add(o.dtype)) for m in (t.raw_model.conv, t.raw_model.fc)]
    summary = _fit(t)
    for h in hooks:
        h.remove()
    assert dtypes == ({torch.bfloat16} if "amp=bf16" in overrides else {torch.float32})
    assert all(p.dtype == torch.float32 for p in t.raw_model.parameters())  # master weights stay fp32
    assert all(torch.isfinite(p).all() for p in t.raw_model.parameters())
    assert summary["steps"] == (3 if "max_steps=3" in overrides else 8)


def test_lr_follows_schedule(tmp_path):
    t = _trainer(tmp_path, "epochs=1", "warmup_steps=2", "min_lr=0.001")
    seen = []
    original = t.schedule.apply

    def spy(step):
        seen.append((step, original(step)))
        return seen[-1][1]

    t.schedule.apply = spy
    _fit(t)
    assert [s for s, _ in seen] == [0, 1, 2, 3]
    assert [lr for _, lr in seen] == pytest.approx([t.schedule.lr_at(s) for s in range(4)])
    assert seen[0][1] == pytest.approx(0.05 / 3)


@pytest.mark.parametrize("overrides, n_train, match", [
    (["batch_size=64"], 32, "larger than the training set"),
    (["amp=fp16", "device=cpu"], 32, "fp16 needs a CUDA device"),
    (["grad_checkpointing=true"], 32, "grad_checkpointing"),
    (["device=tpu"], 32, "device"),
])
def test_trainer_errors(tmp_path, overrides, n_train, match):
    with pytest.raises(ValueError, match=match):
        _trainer(tmp_path, *overrides, n_train=n_train)


def test_cli_resume_uses_the_checkpoint_config(tmp_path):
    from largekernel.cli.train import build_config, register

    t = _trainer(tmp_path, "epochs=1", "seed=7")
    _fit(t)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["train", "--output", str(tmp_path / "run"), "--resume", "epochs=3"])
    cfg = build_config(args)
    assert cfg.resume and cfg.seed == 7 and cfg.epochs == 3 and cfg.batch_size == 8
    assert cfg.model == TrainConfig().model  # the toy run's config is the one stored


def test_cli_flags_and_overrides_precedence(tmp_path):
    from largekernel.cli.train import build_config, register

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("epochs: 5\nlr: 0.1\nmodel_kwargs: {dims: [8, 16, 32, 64]}\n")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["train", "--config", str(cfg_file), "--epochs", "7", "--no-accelerate",
                              "--model-kwargs", '{"dims": [4, 8, 16, 32]}', "lr=0.2"])
    cfg = build_config(args)
    assert cfg.epochs == 7 and cfg.lr == 0.2 and cfg.accelerate is False
    assert cfg.model_kwargs == {"dims": [4, 8, 16, 32]}
    # a different model drops the default config's UniRepLKNet kwargs
    args = parser.parse_args(["train", "--model", "convnext_atto"])
    assert build_config(args).model_kwargs == {}


def test_tensorboard_and_grad_checkpointing_and_accelerate(tmp_path):
    from largekernel.models.base import run_blocks

    class _CkptNet(_Net):
        """The toy net with its conv run through the library's checkpointing helper."""

        def __init__(self):
            super().__init__()
            # a 13x13 depthwise conv is one accelerate() hands to the engine
            large = nn.Conv2d(4, 4, 13, padding=6, groups=4)
            self.blocks = nn.Sequential(nn.Sequential(self.conv, nn.ReLU(), large))
            del self.conv  # registered once, inside the block
            self.grad_checkpointing = False

        def set_grad_checkpointing(self, enable=True):
            self.grad_checkpointing = enable

        def forward(self, x):
            return self.fc(run_blocks(self.blocks, x, self.grad_checkpointing).flatten(1))

    cfg = apply_overrides(TrainConfig(), [
        f"output={tmp_path / 'tb'}", "epochs=1", "batch_size=8", "quiet=true", "plots=false",
        "tensorboard=true", "grad_checkpointing=true", "accelerate=true"])
    t = Trainer(cfg, model=_CkptNet(), train_set=_data(16, 1), eval_set=_data(8, 2), data_info=INFO,
                model_config={"name": "toy", "kwargs": {}})
    recomputed = []  # modules run while autograd executes a backward pass

    def count(module, *_):
        if torch._C._current_graph_task_id() != -1:
            recomputed.append(type(module).__name__)

    hook = nn.modules.module.register_module_forward_hook(count)
    try:
        _fit(t)
    finally:
        hook.remove()
    # checkpointing really recomputed the block inside backward, once per optimizer step
    # (accelerate() swapped the conv for the engine's, hence counting by position)
    assert t.raw_model.grad_checkpointing and t.step == 2
    assert recomputed.count(type(t.raw_model.blocks[0][0]).__name__) == t.step, recomputed
    assert any((tmp_path / "tb" / "tensorboard").iterdir())
    # accelerate() swapped the convolution onto the engine without changing parameter names
    assert type(t.raw_model.blocks[0][2]).__module__ == "largekernel.nn.conv"
    assert set(t.raw_model.state_dict()) == {
        "blocks.0.0.weight", "blocks.0.0.bias", "blocks.0.2.weight", "blocks.0.2.bias", "fc.weight", "fc.bias"}


@pytest.mark.parametrize("split", ["test", "val"])
def test_ema_weights_are_not_picked_by_test_accuracy(tmp_path, split, monkeypatch):
    from largekernel.train.ema import ModelEma

    # a frozen EMA keeps the initial weights, so it scores worse than the trained model
    monkeypatch.setattr(ModelEma, "update", lambda self, model: None)
    summary = _fit(_trainer(tmp_path, "epochs=4", "ema=true", f"eval_split={split}"))
    raw_top1, ema_top1 = summary["history"][-1]["eval_top1"], summary["ema"]["top1"]
    assert raw_top1 > ema_top1
    if split == "test":  # no selection on the test split: EMA on means the EMA weights
        assert summary["weights"] == "ema" and summary["final"]["top1"] == ema_top1
    else:  # on a validation split the better weights are kept
        assert summary["weights"] == "model" and summary["final"]["top1"] == raw_top1
