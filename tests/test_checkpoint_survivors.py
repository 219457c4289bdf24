"""largekernel.checkpoint: the cases the mutation run of checkpoint.py found untested.

Each test checks one behaviour against an expectation computed independently of the library:
messages against the error that torch / safetensors / json raise themselves, loaded weights
against the source tensors, memory-mapping against the process' own memory map
(``/proc/self/maps``), the training-to-deploy conversion against ``reparameterize`` of the
training model. Headers are written by hand (8-byte little-endian length + JSON + data).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
import struct
import sys
import warnings

import pytest
import torch
from safetensors.torch import save as st_save
from torch import nn

import largekernel
from largekernel.checkpoint import (
    CheckpointError,
    build_model_checked,
    config_path_for,
    create_model_from,
    load_checkpoint,
    read_checkpoint_document,
    save_checkpoint,
)
from largekernel.errors import InsufficientMemoryError

KW = {"num_classes": 3, "depths": (1, 1, 1, 1), "dims": (8, 8, 8, 8), "kernel_sizes": ((3,), (5,), (3,), (3,))}


def _one_line(exc: BaseException) -> str:
    """What a one-line error quotes of ``exc`` (whitespace collapsed; these messages are < 500 chars)."""
    text = " ".join(str(exc).split())
    assert len(text) <= 500
    return text


def _raw(header: dict, data: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _entry(dtype="F32", shape=(2,), begin=0, end=8):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}


def _lin(seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(3, 2)


def _tiny(deploy: bool | None = None) -> nn.Module:
    torch.manual_seed(0)
    kwargs = dict(KW) if deploy is None else dict(KW, deploy=deploy)
    model = largekernel.create_model("unireplknet_a", **kwargs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    return model


def _same_weights(model: nn.Module, state: dict) -> None:
    got = model.state_dict()
    assert set(got) == set(state)
    for k, v in state.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0, msg=k)


# ------------------------------------------------------------------------------ file names and kinds
def test_config_file_is_the_lowercase_json_next_to_the_weights(tmp_path):
    assert config_path_for("runs/best.safetensors") == pathlib.Path("runs/best.json")
    save_checkpoint(nn.Linear(2, 2), tmp_path / "m.safetensors")
    assert sorted(os.listdir(tmp_path)) == ["m.json", "m.safetensors"]


def test_the_suffix_makes_a_file_safetensors_even_when_its_content_is_not(tmp_path):
    # 3 bytes: content sniffing cannot recognise it, the .safetensors suffix still decides
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"\x02\0\0")
    with pytest.raises(CheckpointError, match=r"is not a valid safetensors file: shorter than its 8-byte header"):
        load_checkpoint(nn.Linear(3, 2), path)


def test_sniffing_an_unreadable_path_says_not_safetensors(tmp_path):
    from largekernel.checkpoint import _is_safetensors

    assert _is_safetensors(tmp_path / "missing.bin") is False
    assert _is_safetensors(tmp_path) is False  # a directory: open() fails


def test_sniffing_header_length_limit(tmp_path):
    # a '{' after a declared header length below 100 MB: sniffed as safetensors (and then rejected
    # as such); at 100 MB it is not sniffed, so it is read as a torch file
    below = tmp_path / "below.bin"
    below.write_bytes(struct.pack("<Q", 99_999_999) + b"{}")
    with pytest.raises(CheckpointError, match=r"is not a valid safetensors file: header length 99999999 exceeds"):
        load_checkpoint(nn.Linear(3, 2), below)
    at = tmp_path / "at.bin"
    at.write_bytes(struct.pack("<Q", 100_000_000) + b"{}")
    with pytest.raises(CheckpointError, match=r"^(could not read checkpoint|refused to load) .*at\.bin: "):
        load_checkpoint(nn.Linear(3, 2), at)  # torch's reader, not the safetensors header check


def test_header_length_limit_is_100_mb_even_when_the_file_is_larger(tmp_path):
    path = tmp_path / "big.safetensors"
    n = 100_000_001
    with open(path, "wb") as f:  # sparse: the 100 MB are never written
        f.write(struct.pack("<Q", n) + b"{")
        f.truncate(8 + n)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(nn.Linear(3, 2), path)
    assert str(info.value) == (f"{path} is not a valid safetensors file: header length {n} exceeds the file "
                               f"({8 + n} bytes) or the 100 MB limit")


def test_span_is_end_minus_begin_in_the_size_error(tmp_path):
    path = tmp_path / "s.safetensors"
    path.write_bytes(_raw({"w": _entry(shape=(3,), begin=4, end=12)}, b"\0" * 12))
    with pytest.raises(CheckpointError, match=r"'w': shape \(3,\) of F32 needs 12 bytes but data_offsets span 8$"):
        load_checkpoint(nn.Linear(3, 2), path)


# ------------------------------------------------------------------------------ reading errors in full
def test_without_the_safetensors_package_the_error_says_so(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    path.write_bytes(st_save({"weight": torch.zeros(2, 3), "bias": torch.zeros(2)}))
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)  # "import safetensors.torch" fails
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(nn.Linear(3, 2), path)
    assert str(info.value) == "reading .safetensors files needs the 'safetensors' package"
    assert isinstance(info.value.__cause__, ImportError)


def test_header_that_safetensors_rejects_is_quoted(tmp_path):
    # passes our header checks (offsets in range, size right) but leaves a gap before the tensor
    path = tmp_path / "gap.safetensors"
    path.write_bytes(_raw({"a": _entry(begin=4, end=12)}, b"\0" * 12))
    from safetensors import safe_open
    from safetensors.torch import load_file

    with pytest.raises(Exception) as ref:
        load_file(str(path))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(nn.Linear(3, 2), path)
    assert str(info.value) == f"{path} is not a valid safetensors file: {_one_line(ref.value)}"
    # the embedded-config path reads the header with safe_open
    with pytest.raises(Exception) as ref, safe_open(str(path), framework="pt"):
        pass
    with pytest.raises(CheckpointError) as info:
        read_checkpoint_document(path)
    assert str(info.value) == f"cannot read {path}: {_one_line(ref.value)}"


def test_torch_read_error_is_quoted_with_its_type(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(Exception) as ref:
        torch.load(path, map_location="cpu", weights_only=True)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(nn.Linear(3, 2), path)
    assert str(info.value) == f"could not read checkpoint {path}: {type(ref.value).__name__}: {_one_line(ref.value)}"


# ------------------------------------------------------------------------------ torch files
def _save_tagged(obj, path, monkeypatch, *, legacy=False, tag="cuda:0"):
    """torch.save with every storage tagged as saved on ``tag`` (as a GPU training run writes them)."""
    import torch.serialization as ser

    with monkeypatch.context() as m:
        m.setattr(ser, "location_tag", lambda storage: tag)
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)


def _mapped_from(tensor: torch.Tensor, path: pathlib.Path) -> bool:
    """Whether ``tensor``'s data lies in a mapping of ``path`` in this process' memory map."""
    real, ptr = os.path.realpath(path), tensor.data_ptr()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].strip() == real:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                if lo <= ptr < hi:
                    return True
    return False


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux' /proc/self/maps")
def test_zip_torch_files_are_memory_mapped_onto_the_cpu(tmp_path, monkeypatch):
    from largekernel.checkpoint import _read_file

    src = {"weight": torch.arange(6.0).view(2, 3), "bias": torch.tensor([7.0, 8.0])}
    for tag in ("cpu", "cuda:0"):  # a GPU run's checkpoint must load on a CPU-only machine too
        path = tmp_path / f"{tag.replace(':', '')}.pt"
        _save_tagged(src, path, monkeypatch, tag=tag)
        raw = _read_file(path)
        for k, v in src.items():
            assert raw[k].device.type == "cpu" and torch.equal(raw[k], v)
            assert _mapped_from(raw[k], path), (tag, k)
    # a plain in-memory copy is not mistaken for a mapping (the check can fail)
    assert not _mapped_from(torch.arange(6.0), path)


def test_legacy_gpu_torch_file_loads_on_the_cpu(tmp_path, monkeypatch):
    src = _lin(5)
    path = tmp_path / "legacy_gpu.pt"
    _save_tagged(src.state_dict(), path, monkeypatch, legacy=True)
    dst = nn.Linear(3, 2)
    load_checkpoint(dst, path)
    assert torch.equal(dst.weight, src.weight) and torch.equal(dst.bias, src.bias)


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))  # harmless, and visible if it ever runs


@pytest.mark.parametrize("legacy", [False, True])
def test_pickles_are_refused_even_when_torch_is_told_to_allow_them(tmp_path, monkeypatch, legacy):
    # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD turns off torch.load's safe default; an explicit
    # weights_only=True must still win, for zip files and for legacy (not memory-mappable) ones
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2, 3), "x": _Payload(marker)}, path, _use_new_zipfile_serialization=not legacy)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match=r"^refused to load .*evil\.pt: it is not a plain tensor checkpoint"):
            load_checkpoint(nn.Linear(3, 2), path)
    assert not marker.exists()


# ------------------------------------------------------------------------------ unwrapping
def test_default_source_is_named_checkpoint():
    # filter_state_dict calls _unwrap without a source
    from largekernel.models.builder import filter_state_dict

    with pytest.raises(CheckpointError) as info:
        filter_state_dict({"epoch": 1}, nn.Linear(3, 2))
    assert str(info.value) == "checkpoint contains no tensors (top-level keys: ['epoch'])"


def test_wrappers_are_followed_three_levels_deep_and_no_further():
    src = _lin(6)
    sd = src.state_dict()
    dst = nn.Linear(3, 2)
    load_checkpoint(dst, {"model": {"model": {"model": sd}}})
    assert torch.equal(dst.weight, src.weight)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(nn.Linear(3, 2), {"model": {"model": {"model": {"model": sd}}}})
    assert str(info.value) == "the state dict contains no tensors (top-level keys: ['model'])"


def test_non_tensors_before_the_tensors_are_skipped():
    src = _lin(7)
    dst = nn.Linear(3, 2)
    load_checkpoint(dst, {"epoch": 3, "weight": src.weight.detach(), "note": "x", "bias": src.bias.detach()})
    assert torch.equal(dst.weight, src.weight) and torch.equal(dst.bias, src.bias)


# ------------------------------------------------------------------------------ key problems
def test_exactly_twenty_problems_are_listed_without_an_ellipsis():
    model = nn.Sequential(*[nn.Linear(1, 1, bias=False) for _ in range(21)])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(model, {"0.weight": torch.zeros(1, 1)})
    missing = ", ".join(sorted(f"{i}.weight" for i in range(1, 21)))
    assert str(info.value) == f"the state dict does not fit Sequential: 20 missing keys: {missing}"


def test_strict_refuses_only_missing_or_only_unexpected_keys():
    src = _lin(8)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(nn.Linear(3, 2), {"weight": src.weight.detach()})
    assert str(info.value) == "the state dict does not fit Linear: 1 missing keys: bias"
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(nn.Linear(3, 2), {**src.state_dict(), "extra": torch.zeros(1)})
    assert str(info.value) == "the state dict does not fit Linear: 1 unexpected keys: extra"


def test_non_strict_load_warns_with_the_exact_message(caplog):
    src = _lin(9)
    cases = [({"weight": src.weight.detach()}, "non-strict load: 1 missing keys: bias"),
             ({**src.state_dict(), "extra": torch.zeros(1)}, "non-strict load: 1 unexpected keys: extra"),
             ({"weight": src.weight.detach(), "extra": torch.zeros(1)},
              "non-strict load: 1 missing keys: bias; 1 unexpected keys: extra")]
    for state, message in cases:
        caplog.clear()
        dst = nn.Linear(3, 2)
        with caplog.at_level(logging.WARNING, logger="largekernel.checkpoint"):
            load_checkpoint(dst, state, strict=False)
        assert [r.getMessage() for r in caplog.records] == [message]
        assert torch.equal(dst.weight, src.weight)


def test_second_argument_of_the_wrong_type():
    with pytest.raises(TypeError) as info:
        load_checkpoint(nn.Linear(3, 2), 42)
    assert str(info.value) == "path_or_state_dict must be a path or a mapping, got int"


# ------------------------------------------------------------------------------ training -> deploy
def test_conversion_when_the_deploy_form_only_drops_keys(caplog):
    # ConvNeXt has no deploy kwarg; its fused form has a subset of the training keys (no missing
    # key, only unexpected ones); the config has no "deploy" entry
    torch.manual_seed(1)
    train = largekernel.create_model("convnext_atto", num_classes=2, depths=(1, 1, 1, 1), dims=(8, 8, 8, 8)).eval()
    assert "deploy" not in train.largekernel_config["kwargs"]
    expected = largekernel.reparameterize(train).state_dict()
    fused = largekernel.reparameterize(
        largekernel.create_model("convnext_atto", num_classes=2, depths=(1, 1, 1, 1), dims=(8, 8, 8, 8)))
    assert set(expected) < set(train.state_dict())
    with caplog.at_level(logging.INFO, logger="largekernel.checkpoint"):
        load_checkpoint(fused, train.state_dict())
    assert [r.getMessage() for r in caplog.records] == ["converting a training-form checkpoint to the deploy form"]
    _same_weights(fused, expected)


def test_conversion_with_a_config_that_has_no_kwargs():
    torch.manual_seed(2)
    train = largekernel.create_model("convnext_atto").eval()  # the defaults
    expected = largekernel.reparameterize(train).state_dict()
    fused = largekernel.reparameterize(largekernel.create_model("convnext_atto"))
    fused.largekernel_config = {"name": "convnext_atto"}  # e.g. written by hand: no "kwargs"
    load_checkpoint(fused, train.state_dict())
    _same_weights(fused, expected)


def test_fused_model_without_a_config_gets_a_checkpoint_error():
    fused = largekernel.reparameterize(_tiny())
    del fused.largekernel_config  # marked deploy, but cannot say how it was built
    with pytest.raises(CheckpointError, match="missing keys: .*unexpected keys: "):
        load_checkpoint(fused, _tiny().state_dict())


def test_deploy_marked_module_without_parameters():
    empty = nn.Module()
    empty.largekernel_form = "deploy"
    empty.largekernel_config = {"name": "unireplknet_a", "kwargs": dict(KW)}
    with pytest.raises(CheckpointError, match="^the state dict does not fit Module: .* unexpected keys: "):
        load_checkpoint(empty, _tiny().state_dict())


def test_conversion_runs_on_the_models_device(monkeypatch):
    # a deploy model on the meta device (stand-in for a GPU): the training-form twin must be put
    # there too; reparameterize is wrapped to see where the twin is when it is fused
    from largekernel import reparam

    seen = []
    real = reparam.reparameterize

    def spy(model, *args, **kwargs):
        seen.append({p.device.type for p in model.parameters()})
        return real(model, *args, **kwargs)

    monkeypatch.setattr(reparam, "reparameterize", spy)
    with torch.device("meta"):
        deploy = largekernel.create_model("unireplknet_a", deploy=True, **KW)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # copying into meta parameters is a no-op, torch warns
        load_checkpoint(deploy, _tiny().state_dict())
    assert seen == [{"meta"}]


def test_extra_key_in_a_training_checkpoint_is_a_checkpoint_error():
    state = {**_tiny().state_dict(), "extra": torch.zeros(1)}
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(_tiny(deploy=True), state)
    assert type(info.value) is CheckpointError and "extra" in str(info.value)


# ------------------------------------------------------------------------------ writing
def test_save_errors_and_log_in_full(tmp_path, caplog):
    bad = tmp_path / "m.pt"
    with pytest.raises(ValueError) as info:
        save_checkpoint(nn.Linear(2, 2), bad)
    assert str(info.value) == f"path must end in '.safetensors', got {str(bad)!r}"
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    n = len(model.state_dict())  # 2 + 5 tensors
    with caplog.at_level(logging.INFO, logger="largekernel.checkpoint"):
        path = save_checkpoint(model, tmp_path / "m.safetensors")
    assert [r.getMessage() for r in caplog.records] == [f"saved {n} tensors to {path}"]


def test_save_with_a_config_without_kwargs(tmp_path):
    model = nn.Linear(2, 2)
    model.largekernel_config = {"name": "unireplknet_a"}
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    doc = json.loads(config_path_for(path).read_text())
    assert doc["name"] == "unireplknet_a" and doc["kwargs"] == {}


# ------------------------------------------------------------------------------ reading the document
def test_document_errors_name_the_file(tmp_path):
    path = save_checkpoint(nn.Linear(2, 2), tmp_path / "p.safetensors")
    cfg = config_path_for(path)
    cfg.write_bytes(b'{"format": ')
    with pytest.raises(json.JSONDecodeError) as ref:
        json.loads(b'{"format": ')
    with pytest.raises(CheckpointError) as info:
        read_checkpoint_document(path)
    assert str(info.value) == f"invalid config file {cfg}: not JSON ({_one_line(ref.value)})"
    cfg.write_text("[1, 2]")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint_document(path)
    assert str(info.value) == f"invalid config file {cfg}: must be a JSON object, got list"


def test_unreadable_document_is_a_checkpoint_error(tmp_path, monkeypatch):
    path = save_checkpoint(nn.Linear(2, 2), tmp_path / "p.safetensors")
    cfg = config_path_for(path)
    err = PermissionError(13, "Permission denied", str(cfg))
    real = pathlib.Path.read_bytes

    def read_bytes(self):  # stand-in for a file this user may not read (the tests may run as root)
        if self == cfg:
            raise err
        return real(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", read_bytes)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint_document(path)
    assert str(info.value) == f"cannot read config file {cfg}: {err}"


def test_embedded_document_errors_name_the_file(tmp_path):
    path = tmp_path / "e.safetensors"
    path.write_bytes(st_save({"w": torch.zeros(1)}, metadata={"largekernel_config": "{not json"}))
    with pytest.raises(json.JSONDecodeError) as ref:
        json.loads("{not json")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint_document(path)
    assert str(info.value) == f"invalid config file {path} (embedded config): not JSON ({_one_line(ref.value)})"
    bad = {"format": "largekernel-checkpoint-v1", "name": None, "form": "nonsense"}
    path.write_bytes(st_save({"w": torch.zeros(1)}, metadata={"largekernel_config": json.dumps(bad)}))
    with pytest.raises(CheckpointError, match=rf"^invalid config file {path} \(embedded config\): .*form"):
        read_checkpoint_document(path)


# ------------------------------------------------------------------------------ building from a config
def test_unexpected_tensor_names_are_refused_before_building():
    shapes = {k: tuple(v.shape) for k, v in _tiny().state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        build_model_checked("unireplknet_a", KW, source="s", shapes={**shapes, "extra": (1,)})
    assert str(info.value) == "s does not fit unireplknet_a with its saved kwargs: 1 unexpected keys: extra"


def test_deploy_kwarg_builds_the_deploy_form_directly():
    d = build_model_checked("unireplknet_a", KW, source="s", deploy=True)
    ref = largekernel.create_model("unireplknet_a", deploy=True, **KW)  # no reparameterisation
    assert sorted(d.state_dict()) == sorted(ref.state_dict())
    assert d.training == ref.training and getattr(d, "largekernel_form", None) == getattr(ref, "largekernel_form", None)


def test_kwargs_that_do_not_build_are_quoted(monkeypatch):
    kwargs = {**KW, "bogus": 1}
    with pytest.raises(TypeError) as ref:
        largekernel.create_model("unireplknet_a", **kwargs)
    expected = (f"s: kwargs {kwargs!r} do not build 'unireplknet_a': "
                f"{type(ref.value).__name__}: {_one_line(ref.value)}")
    with pytest.raises(CheckpointError) as info:  # fails while built on the meta device
        build_model_checked("unireplknet_a", kwargs, source="s")
    assert str(info.value) == expected
    # a model that cannot be built on the meta device is built for real directly; same message
    from largekernel.utils import memory

    monkeypatch.setattr(memory, "meta_model", lambda build: None)
    with pytest.raises(CheckpointError) as info:
        build_model_checked("unireplknet_a", kwargs, source="s")
    assert str(info.value) == expected


def test_memory_guard_is_on_unless_allow_large(tmp_path, monkeypatch):
    from largekernel.utils import memory

    path = save_checkpoint(_tiny(), tmp_path / "t.safetensors")
    monkeypatch.setattr(memory, "available_memory", lambda device=None: 1)  # a machine with 1 byte free
    with pytest.raises(InsufficientMemoryError):
        build_model_checked("unireplknet_a", KW, source="s")
    with pytest.raises(InsufficientMemoryError):
        create_model_from(path)
    assert isinstance(build_model_checked("unireplknet_a", KW, source="s", allow_large=True), nn.Module)
    _same_weights(create_model_from(path, allow_large=True), _tiny().state_dict())


def test_create_model_from_a_torch_file_with_its_document(tmp_path):
    model = _tiny()
    save_checkpoint(model, tmp_path / "ref.safetensors")
    pt = tmp_path / "w.pt"
    torch.save({"model": model.state_dict(), "epoch": 4}, pt)
    shutil.copy(tmp_path / "ref.json", config_path_for(pt))
    _same_weights(create_model_from(pt), model.state_dict())
    wrong = dict(model.state_dict(), **{"head.weight": torch.zeros(5, 8)})
    torch.save(wrong, pt)
    with pytest.raises(CheckpointError, match=r"head\.weight: checkpoint \(5, 8\) vs model \(3, 8\)"):
        create_model_from(pt)
    torch.save({"epoch": 4}, pt)
    with pytest.raises(CheckpointError) as info:
        create_model_from(pt)
    assert str(info.value) == f"checkpoint {pt} contains no tensors (top-level keys: ['epoch'])"
