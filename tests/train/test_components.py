"""Unit tests of the training building blocks: config, schedule, optimiser groups, EMA, mixup,
metrics, atomic checkpoints."""

from __future__ import annotations

import math
import os
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from largekernel.train import checkpointing as ckpt
from largekernel.train.config import TrainConfig, apply_overrides, config_from_dict, load_config
from largekernel.train.ema import ModelEma
from largekernel.train.metrics import ClassificationMeter, topk_correct
from largekernel.train.mixup import Mixup, one_hot_smooth, soft_target_cross_entropy
from largekernel.train.optim import build_optimizer, param_groups
from largekernel.train.schedule import WarmupCosineSchedule, warmup_cosine_lr


# ---------------------------------------------------------------------------------- config
def test_overrides_types_and_dotted_keys():
    cfg = apply_overrides(TrainConfig(), [
        "epochs=3", "lr=1e-3", "amp=bf16", "ema=true", "model_kwargs.dims=[8,16,32,64]",
        "model_kwargs.kernel_sizes=[[3],[13,13]]", "batch-size=16", "clip_grad=1", "betas=[0.8,0.9]",
    ])
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    assert cfg.lr == 1e-3 and cfg.amp == "bf16" and cfg.ema is True and cfg.batch_size == 16
    assert cfg.model_kwargs == {"dims": [8, 16, 32, 64], "kernel_sizes": [[3], [13, 13]]}
    assert cfg.clip_grad == 1.0 and isinstance(cfg.clip_grad, float)
    assert cfg.betas == (0.8, 0.9)
    cfg.validate()
    # the original is untouched
    assert TrainConfig().model_kwargs == {}


@pytest.mark.parametrize("override, match", [
    ("epoch=3", "epochs"),  # typo: suggestion
    ("epochs", "key=value"),
    ("epochs=abc", "epochs must be a number"),
    ("ema=maybe", "ema must be true or false"),
    ("epochs=1.5", "integer"),
    ("lr.x=1", "not a mapping"),
])
def test_override_errors(override, match):
    with pytest.raises(ValueError, match=match):
        apply_overrides(TrainConfig(), [override])


@pytest.mark.parametrize("field, value, match", [
    ("epochs", 0, "epochs"), ("batch_size", -1, "batch_size"), ("optimizer", "adam", "optimizer"),
    ("amp", "fp8", "amp"), ("label_smoothing", 1.0, "label_smoothing"), ("lr", 0.0, "lr"),
    ("mixup", -0.1, "mixup"), ("eval_split", "train", "eval_split"),
])
def test_validate_errors(field, value, match):
    cfg = TrainConfig()
    setattr(cfg, field, value)
    with pytest.raises(ValueError, match=match):
        cfg.validate()


def test_yaml_load_and_errors(tmp_path):
    good = tmp_path / "c.yaml"
    good.write_text("model: convnext_atto\nmodel_kwargs:\n  dims: [8, 16, 32, 64]\nepochs: 2\nlr: 0.01\n")
    cfg = load_config(good)
    assert cfg.model == "convnext_atto" and cfg.model_kwargs["dims"] == [8, 16, 32, 64] and cfg.epochs == 2
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("epochz: 2\n")
    with pytest.raises(ValueError, match="epochz"):
        load_config(bad_key)
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("epochs: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(bad_yaml)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="mapping"):
        config_from_dict([1, 2])


def test_packaged_default_config_is_valid():
    cfg = load_config(None).validate()
    assert cfg.model.startswith("unireplknet") and cfg.data == "digits"


# -------------------------------------------------------------------------------- schedule
def test_warmup_cosine_values():
    base, total, warm, min_lr = 0.1, 20, 4, 0.001
    lrs = [warmup_cosine_lr(s, base_lr=base, total_steps=total, warmup_steps=warm, min_lr=min_lr)
           for s in range(total + 1)]
    # warm-up: linear, strictly increasing, reaches base at step == warm
    assert lrs[0] == pytest.approx(base / (warm + 1))
    assert all(b > a for a, b in zip(lrs[:warm], lrs[1:warm + 1]))
    assert lrs[warm] == pytest.approx(base)
    # cosine half-way and at the end (closed form)
    mid = warm + (total - warm) // 2
    expected_mid = min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * (mid - warm) / (total - warm)))
    assert lrs[mid] == pytest.approx(expected_mid)
    assert lrs[total] == pytest.approx(min_lr)
    assert all(b <= a for a, b in zip(lrs[warm:], lrs[warm + 1:]))
    with pytest.raises(ValueError):
        warmup_cosine_lr(0, base_lr=0.1, total_steps=0)


def test_schedule_sets_groups_and_round_trips():
    p = nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [p]}, {"params": [nn.Parameter(torch.zeros(1))], "lr_scale": 0.5}], lr=1.0)
    sched = WarmupCosineSchedule(opt, base_lr=1.0, total_steps=10, warmup_steps=0)
    lr = sched.apply(3)
    assert opt.param_groups[0]["lr"] == pytest.approx(lr)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.5 * lr)
    other = WarmupCosineSchedule(opt, base_lr=5.0, total_steps=99)
    other.load_state_dict(sched.state_dict())
    assert other.lr_at(7) == sched.lr_at(7) and other.last_step == 3
    with pytest.raises(ValueError):
        WarmupCosineSchedule(opt, base_lr=0.0, total_steps=10)


# ------------------------------------------------------------------------------ optimiser
class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.gamma = nn.Parameter(torch.ones(4))
        self.pos = nn.Parameter(torch.zeros(1, 4, 2, 2))
        self.fc = nn.Linear(4, 2)
        self.frozen = nn.Parameter(torch.zeros(3, 3), requires_grad=False)

    def no_weight_decay(self):
        return {"pos"}


def test_no_decay_groups():
    net = _Net()
    groups = param_groups(net, 0.05)
    decay = {id(p) for p in groups[0]["params"]}
    no_decay = {id(p) for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert decay == {id(net.conv.weight), id(net.fc.weight)}
    assert no_decay == {id(net.conv.bias), id(net.bn.weight), id(net.bn.bias), id(net.gamma),
                        id(net.pos), id(net.fc.bias)}
    assert id(net.frozen) not in decay | no_decay
    opt = build_optimizer(net, "sgd", lr=0.1, weight_decay=0.05)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["nesterov"]
    assert isinstance(build_optimizer(net, "adamw", lr=0.1), torch.optim.AdamW)
    with pytest.raises(ValueError, match="optimizer"):
        build_optimizer(net, "lbfgs", lr=0.1)


def test_no_decay_param_unchanged_by_weight_decay():
    # with zero gradient, AdamW decays only the decayed group
    net = _Net()
    opt = build_optimizer(net, "adamw", lr=0.1, weight_decay=0.5)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(net.gamma, before["gamma"]) and torch.equal(net.bn.weight, before["bn.weight"])
    assert torch.allclose(net.fc.weight, before["fc.weight"] * (1 - 0.1 * 0.5))


# ------------------------------------------------------------------------------------ EMA
def test_ema_matches_closed_form():
    net = nn.Linear(3, 2)
    ema = ModelEma(net, decay=0.9, warmup=False)
    w0 = net.weight.detach().clone()
    expected = w0.clone()
    for k in range(3):
        with torch.no_grad():
            net.weight.add_(1.0)
        ema.update(net)
        expected = 0.9 * expected + 0.1 * net.weight.detach()
    assert torch.allclose(ema.module.weight, expected, atol=1e-6)
    assert not ema.module.weight.requires_grad
    warm = ModelEma(net, decay=0.999)
    assert warm.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    state = ema.ema_state()
    other = ModelEma(nn.Linear(3, 2), decay=0.5)
    other.load_ema_state(state)
    assert torch.equal(other.module.weight, ema.module.weight) and other.updates == 3
    with pytest.raises(ValueError):
        ModelEma(net, decay=1.0)


# ------------------------------------------------------------------------ mixup / smoothing
def test_label_smoothing_targets_and_loss():
    y = torch.tensor([0, 2, 1])
    t = one_hot_smooth(y, 4, 0.2)
    assert torch.allclose(t.sum(1), torch.ones(3))
    assert t[0, 0] == pytest.approx(0.8 + 0.05) and t[0, 1] == pytest.approx(0.05)
    logits = torch.randn(3, 4, dtype=torch.float64)
    ref = F.cross_entropy(logits, y, label_smoothing=0.2)
    assert soft_target_cross_entropy(logits.float(), t).item() == pytest.approx(ref.item(), rel=1e-5)
    with pytest.raises(ValueError):
        one_hot_smooth(y, 4, 1.0)


def test_mixup_and_cutmix_targets_are_consistent():
    torch.manual_seed(0)
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 8, 8).contiguous()
    y = torch.tensor([0, 1, 2, 3])
    xm, ym = Mixup(mixup_alpha=1.0, num_classes=4)(x, y)
    lam = ym[0, 0].item()  # sample 0 mixes with sample 3 (batch reversal)
    assert torch.allclose(xm[0], lam * x[0] + (1 - lam) * x[3])
    assert torch.allclose(ym.sum(1), torch.ones(4))
    assert ym[0, 3].item() == pytest.approx(1 - lam)
    xc, yc = Mixup(cutmix_alpha=1.0, num_classes=4)(x, y)
    # the label weight equals the fraction of pixels that kept their own image
    own = (xc[0] == x[0]).float().mean().item()
    assert yc[0, 0].item() == pytest.approx(own)
    off_x, off_y = Mixup(num_classes=4, label_smoothing=0.1)(x, y)
    assert torch.equal(off_x, x) and torch.allclose(off_y, one_hot_smooth(y, 4, 0.1))
    with pytest.raises(ValueError):
        Mixup(mixup_alpha=-1)


# -------------------------------------------------------------------------------- metrics
def test_metrics_against_numpy():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(50, 7, generator=g)
    target = torch.randint(0, 7, (50,), generator=g)
    m = ClassificationMeter(7)
    m.update(logits[:20], target[:20], loss=1.0)
    m.update(logits[20:], target[20:], loss=2.0)
    out = m.compute()
    ln, tn = logits.numpy(), target.numpy()
    order = np.argsort(-ln, axis=1)
    assert out["top1"] == pytest.approx(np.mean(order[:, 0] == tn))
    assert out["top5"] == pytest.approx(np.mean([tn[i] in order[i, :5] for i in range(50)]))
    assert out["loss"] == pytest.approx((20 * 1.0 + 30 * 2.0) / 50)
    cm = np.zeros((7, 7), dtype=int)
    for t, p in zip(tn, order[:, 0]):
        cm[t, p] += 1
    assert out["confusion_matrix"] == cm.tolist()
    for c in range(7):
        if cm[c].sum():
            assert out["per_class_accuracy"][c] == pytest.approx(cm[c, c] / cm[c].sum())
    assert topk_correct(torch.eye(3), torch.tensor([0, 1, 0]), (1, 5)) == [2, 3]
    merged = ClassificationMeter(7)
    merged.load_merged(m.merge_tensor())
    assert merged.compute() == out


# ---------------------------------------------------------------------------- checkpoints
def test_rng_state_round_trip_through_weights_only_file(tmp_path):
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    state = ckpt.capture_rng_state()
    ckpt.atomic_torch_save({"rng": state}, tmp_path / "r.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    loaded = torch.load(tmp_path / "r.pt", weights_only=True)
    ckpt.restore_rng_state(loaded["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def _state(v: float) -> dict:
    return {"model": {"w": torch.full((3,), v)}, "config": {"x": 1}}


def test_atomic_checkpoint_survives_crash_before_rename(tmp_path, monkeypatch):
    first = ckpt.save_training_checkpoint(_state(1.0), tmp_path, step=1)
    assert ckpt.latest_checkpoint(tmp_path) == first

    def crash(src, dst):
        raise OSError("simulated crash between temp write and rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        ckpt.save_training_checkpoint(_state(2.0), tmp_path, step=2)
    monkeypatch.undo()
    # the previous checkpoint and the pointer are intact, and no temp file is left behind
    assert ckpt.latest_checkpoint(tmp_path) == first
    assert torch.equal(ckpt.load_training_checkpoint(first)["model"]["w"], torch.full((3,), 1.0))
    assert not (tmp_path / "checkpoints" / "step_00000002.pt").exists()
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.endswith(".tmp")] == []


def test_checkpoint_pruning_pointer_and_corruption(tmp_path):
    for step in (1, 2, 3):
        ckpt.save_training_checkpoint(_state(float(step)), tmp_path, step=step, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*.pt"))
    assert names == ["step_00000002.pt", "step_00000003.pt"]
    latest = ckpt.latest_checkpoint(tmp_path)
    assert latest.name == "step_00000003.pt"
    # dangling pointer: fall back to the newest step file
    (tmp_path / "checkpoints" / "latest").write_text("step_00000099.pt")
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000003.pt"
    assert ckpt.latest_checkpoint(tmp_path / "nothing") is None
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        ckpt.load_training_checkpoint(bad)
    with pytest.raises(FileNotFoundError):
        ckpt.load_training_checkpoint(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="not a largekernel training checkpoint"):
        ckpt.load_training_checkpoint(other)


def test_malicious_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    torch.save({"model": Evil(), "config": {}}, path)
    with pytest.raises(ValueError, match="cannot read"):
        ckpt.load_training_checkpoint(path)
    assert not (tmp_path / "pwned").exists()
