"""timm's ConvNeXt / InceptionNeXt weights from a local timm cache, offline (issue 17).

The caches are built in tmp_path in the layouts timm and huggingface_hub write (blobs + snapshot
symlinks + refs/main; torch.hub's checkpoints/<url basename>.pth), holding the state dict of timm's
own randomly initialised model. The reference is timm's model with those weights.
"""

from __future__ import annotations

import socket

import pytest
import torch

import largekernel
from largekernel.integrations.timm_cache import find_timm_checkpoint, from_timm_cache, timm_cache_dirs

timm = pytest.importorskip("timm", reason="timm provides the reference models and cache names")
safetensors_torch = pytest.importorskip("safetensors.torch")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection attempt fails the test: the lookup must be offline."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for var in ("HF_HUB_CACHE", "HF_HOME", "TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)


def _timm_model(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # timm's init leaves layer scales at 1e-6 and BN at identity: perturb them
        for name, t in model.state_dict().items():
            if t.is_floating_point() and ("gamma" in name or "running" in name or "norm" in name):
                t.copy_(t + 0.2 * torch.rand(t.shape, generator=g))
    return model


def _write_hub(hub, arch_tag: str, state: dict, filename: str = "model.safetensors", rev: str = "0123abcd"):
    """huggingface_hub's cache layout: blobs/<hash>, snapshots/<rev>/<file> -> blob, refs/main."""
    repo = hub / f"models--timm--{arch_tag}"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / rev).mkdir(parents=True)
    (repo / "refs").mkdir()
    blob = repo / "blobs" / "5f3e9c0d1a"
    if filename.endswith(".safetensors"):
        safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, str(blob))
    else:
        torch.save(state, blob)
    (repo / "snapshots" / rev / filename).symlink_to(f"../../blobs/{blob.name}")
    (repo / "refs" / "main").write_text(rev)
    return repo / "snapshots" / rev / filename


def _same_outputs(ours: torch.nn.Module, ref: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), ref(x), atol=1e-5, rtol=1e-4)


def test_hf_hub_cache_convnext(tmp_path):
    ref = _timm_model("convnext_atto")
    hub = tmp_path / "hf" / "hub"
    path = _write_hub(hub, "convnext_atto.d2_in1k", ref.state_dict())
    assert find_timm_checkpoint("convnext_atto", hub) == path
    _same_outputs(from_timm_cache("convnext_atto", cache_dir=hub), ref)
    # HF_HOME (the directory above hub/) works as cache_dir too, with the full timm name
    _same_outputs(from_timm_cache("convnext_atto.d2_in1k", cache_dir=tmp_path / "hf"), ref)


def test_timm_create_model_of_our_model_reads_the_cache(tmp_path, monkeypatch):
    """timm.create_model("lk_convnext_atto", pretrained=True) goes through the same offline lookup."""
    ref = _timm_model("convnext_atto", seed=7)
    _write_hub(tmp_path / "hub", "convnext_atto.d2_in1k", ref.state_dict())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    largekernel.register_with_timm()
    model = timm.create_model("lk_convnext_atto", pretrained=True)
    assert type(model).__module__.startswith("largekernel.")
    _same_outputs(model, ref)


def test_create_model_pretrained_reads_the_default_cache(tmp_path, monkeypatch):
    ref = _timm_model("inception_next_atto", seed=3)
    _write_hub(tmp_path / "hf" / "hub", "inception_next_atto.sail_in1k", ref.state_dict(),
               filename="pytorch_model.bin")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    model = largekernel.create_model("inception_next_atto", pretrained=True)
    _same_outputs(model, ref)
    # another head size: the backbone is timm's, the classifier is fresh
    ten = largekernel.create_model("inception_next_atto", pretrained=True, num_classes=10)
    backbone = {k: v for k, v in ref.state_dict().items() if not k.startswith("head.fc2")}
    for k, v in backbone.items():
        assert torch.equal(ten.state_dict()[k], v), k
    feats = largekernel.create_model("inception_next_atto", pretrained=True, features_only=True)
    assert feats.state_dict().keys() < ref.state_dict().keys()
    for k, v in feats.state_dict().items():
        assert torch.equal(v, ref.state_dict()[k]), k


def test_legacy_torch_hub_cache(tmp_path, monkeypatch):
    ref = _timm_model("convnext_atto", seed=5)
    url = timm.models.get_pretrained_cfg("convnext_atto.d2_in1k").url
    ckpts = tmp_path / "torch" / "hub" / "checkpoints"
    ckpts.mkdir(parents=True)
    torch.save(ref.state_dict(), ckpts / url.rsplit("/", 1)[1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    assert find_timm_checkpoint("convnext_atto").parent == ckpts
    _same_outputs(from_timm_cache("convnext_atto"), ref)


@pytest.mark.slow
def test_refs_main_picks_the_revision(tmp_path):
    old, new = _timm_model("convnext_atto", seed=1), _timm_model("convnext_atto", seed=2)
    hub = tmp_path / "hub"
    _write_hub(hub, "convnext_atto.d2_in1k", old.state_dict(), rev="aaaa")
    repo = hub / "models--timm--convnext_atto.d2_in1k"
    (repo / "snapshots" / "bbbb").mkdir()
    safetensors_torch.save_file({k: v.contiguous() for k, v in new.state_dict().items()},
                                str(repo / "snapshots" / "bbbb" / "model.safetensors"))
    (repo / "refs" / "main").write_text("bbbb\n")
    _same_outputs(from_timm_cache("convnext_atto", cache_dir=hub), new)


def test_nothing_cached_names_every_directory_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(FileNotFoundError) as err:
        largekernel.create_model("convnext_atto", pretrained=True)
    text = str(err.value)
    assert str(tmp_path / "hf" / "hub") in text and str(tmp_path / "th" / "hub" / "checkpoints") in text
    assert "models--timm--convnext_atto.d2_in1k" in text and "never downloads" in text
    with pytest.raises(FileNotFoundError, match="models--timm--convnext_atto.other"):
        from_timm_cache("convnext_atto.other", cache_dir=tmp_path)


def test_bad_names_and_arguments(tmp_path):
    with pytest.raises(ValueError, match="ConvNeXt or InceptionNeXt"):
        find_timm_checkpoint("unireplknet_a", tmp_path)
    with pytest.raises(ValueError, match="ConvNeXt or InceptionNeXt"):
        find_timm_checkpoint("convnext_nosuch", tmp_path)
    with pytest.raises(TypeError, match="name must be"):
        find_timm_checkpoint(None, tmp_path)
    with pytest.raises(TypeError, match="pretrained_cfg"):
        from_timm_cache("convnext_atto", cache_dir=tmp_path, pretrained_cfg={"file": "x"})
    assert timm_cache_dirs([tmp_path])[1][1] == tmp_path / "checkpoints"
