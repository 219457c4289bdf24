"""Checkpoints: our safetensors format, torch files (weights only), wrappers, errors, malicious files."""

from __future__ import annotations

import json
import os
import pathlib

import pytest
import torch

import largekernel
from largekernel.checkpoint import CheckpointError, config_path_for, create_model_from, load_checkpoint, save_checkpoint

KW = dict(num_classes=5, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), kernel_sizes=((3,), (7,), (5,), (9,)))


def _model(**extra):
    torch.manual_seed(0)
    model = largekernel.create_model("unireplknet_a", **KW, **extra)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        for name, p in model.named_parameters():
            if name.endswith(("gamma", "beta")):
                p.normal_(0, 0.3)
    return model


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_roundtrip_train_and_deploy(tmp_path):
    model = _model()
    path = save_checkpoint(model, tmp_path / "m.safetensors", metadata={"epoch": 3})
    cfg = json.loads(config_path_for(path).read_text())
    assert cfg["name"] == "unireplknet_a" and cfg["form"] == "train" and cfg["metadata"] == {"epoch": 3}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    rebuilt = create_model_from(path)
    assert _same(model, rebuilt)

    fused = largekernel.reparameterize(model)
    dpath = save_checkpoint(fused, tmp_path / "d.safetensors")
    assert json.loads(config_path_for(dpath).read_text())["form"] == "deploy"
    rebuilt_d = create_model_from(dpath)
    assert _same(fused, rebuilt_d) and not rebuilt_d.training
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rebuilt_d(x), model.eval()(x), atol=1e-5, rtol=1e-4)
    # the config is also embedded in the safetensors header
    config_path_for(dpath).unlink()
    assert _same(fused, create_model_from(dpath))


@pytest.mark.parametrize("wrapper", [None, "model", "state_dict", "model_ema"])
@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "module._orig_mod."])
def test_wrappers_and_prefixes(tmp_path, wrapper, prefix):
    src = _model()
    sd = {prefix + k: v for k, v in src.state_dict().items()}
    obj = sd if wrapper is None else {wrapper: sd, "epoch": 7}
    path = tmp_path / "c.pth"
    torch.save(obj, path)
    dst = largekernel.create_model("unireplknet_a", **KW)
    assert load_checkpoint(dst, path) is dst
    assert _same(src, dst)
    dst2 = largekernel.create_model("unireplknet_a", **KW)
    load_checkpoint(dst2, obj)  # in-memory mapping
    assert _same(src, dst2)


def test_official_fixture_layouts(fixtures_dir):
    d = torch.load(fixtures_dir / "unireplknet_a_official.pt", weights_only=True)
    train = largekernel.create_model("unireplknet_a", num_classes=10)
    load_checkpoint(train, {"model": d["train_state_dict"]})
    deploy = largekernel.create_model("unireplknet_a", num_classes=10, deploy=True)
    load_checkpoint(deploy, d["deploy_state_dict"])
    # a training-form checkpoint given to a deploy-form model is converted
    converted = largekernel.create_model("unireplknet_a", num_classes=10, deploy=True).eval()
    load_checkpoint(converted, {"model": d["train_state_dict"]})
    x = d["inputs"][1]
    with torch.no_grad():
        y = d["outputs_deploy"][1]
        assert ((converted(x) - y).abs().max() / y.abs().max()) <= 1e-4
        assert ((deploy.eval()(x) - y).abs().max() / y.abs().max()) <= 1e-4


def test_errors_list_missing_unexpected_and_shapes():
    model = largekernel.create_model("unireplknet_a", **KW)
    sd = dict(model.state_dict())
    sd.pop("head.weight")
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing keys: head\.weight.*unexpected keys: extra\.weight"):
        load_checkpoint(model, sd)
    load_checkpoint(model, sd, strict=False)  # tolerated when not strict
    bad = dict(model.state_dict())
    bad["head.weight"] = torch.zeros(3, 32)
    with pytest.raises(CheckpointError, match=r"shape mismatches: head\.weight: checkpoint \(3, 32\) vs model \(5, 32\)"):
        load_checkpoint(model, bad, strict=False)
    assert issubclass(CheckpointError, RuntimeError)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": _Evil(marker)}, path)
    model = largekernel.create_model("unireplknet_a", **KW)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(model, path)
    assert not marker.exists()


def test_corrupt_and_missing_files(tmp_path):
    model = largekernel.create_model("unireplknet_a", **KW)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError):
        load_checkpoint(model, junk)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken json")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(model, bad_st)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(model, tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="not found"):
        create_model_from(tmp_path / "nope.safetensors")
    with pytest.raises(TypeError):
        load_checkpoint(model, 42)
    with pytest.raises(CheckpointError, match="no tensors"):
        load_checkpoint(model, {"epoch": 3})


def test_save_validation(tmp_path):
    model = largekernel.create_model("unireplknet_a", **KW)
    with pytest.raises(ValueError, match="safetensors"):
        save_checkpoint(model, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(model, tmp_path / "m.safetensors", metadata={"x": object()})
    assert not (tmp_path / "m.safetensors").exists()
    plain = torch.nn.Linear(2, 2)
    p = save_checkpoint(plain, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="registered model"):
        create_model_from(p)
    other = torch.nn.Linear(2, 2)
    load_checkpoint(other, p)
    assert torch.equal(other.weight, plain.weight)
    assert isinstance(pathlib.Path(p), pathlib.Path)
