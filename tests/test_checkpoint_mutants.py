"""largekernel.checkpoint in detail: safetensors header checks, wrapper/prefix unwrapping, error lists,
the written document, training-to-deploy conversion, and the checks before a model is built.

Headers are written by hand here (8-byte little-endian length + JSON + data), independently of the
library, so every validation branch is reached with exactly one thing wrong.
"""

from __future__ import annotations

import inspect
import json
import logging
import struct

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
    read_safetensors_header,
    save_checkpoint,
)
from largekernel.errors import CheckpointNotFoundError
from largekernel.models.registry import model_entrypoint

KW = dict(num_classes=3, depths=(1, 1, 1, 1), dims=(8, 8, 8, 8), kernel_sizes=((3,), (5,), (3,), (3,)))


def _raw(header: dict, data: bytes = b"", *, declared: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if declared is None else declared) + text + data


def _write(tmp_path, blob: bytes, name="h.safetensors"):
    path = tmp_path / name
    path.write_bytes(blob)
    return path


def _entry(dtype="F32", shape=(2,), begin=0, end=8):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}


# ------------------------------------------------------------------------------ safetensors header
def test_header_of_a_real_file_matches_what_was_saved(tmp_path):
    tensors = {"a": torch.zeros(2, 3), "b": torch.ones(4, dtype=torch.float16), "c": torch.zeros(0, 5),
               "d": torch.arange(3, dtype=torch.int64), "e": torch.tensor([True]), "f": torch.ones(2, dtype=torch.bfloat16)}
    path = _write(tmp_path, st_save(tensors, metadata={"k": "v"}))
    expected = {"a": ("F32", (2, 3)), "b": ("F16", (4,)), "c": ("F32", (0, 5)), "d": ("I64", (3,)),
                "e": ("BOOL", (1,)), "f": ("BF16", (2,))}
    assert read_safetensors_header(path) == expected
    assert read_safetensors_header(str(path)) == expected


def test_header_boundaries_that_are_valid(tmp_path):
    # a tensor ending exactly at the end of the data; an empty tensor at offset 0; metadata of strings
    header = {"__metadata__": {"a": "b"}, "x": _entry("I16", (2, 2), 0, 8), "z": _entry("U8", (0,), 0, 0)}
    assert read_safetensors_header(_write(tmp_path, _raw(header, b"\0" * 8))) == {"x": ("I16", (2, 2)),
                                                                                   "z": ("U8", (0,))}
    assert read_safetensors_header(_write(tmp_path, _raw({}), "empty.safetensors")) == {}


@pytest.mark.parametrize("header,data,needle", [
    ([1, 2], b"", "header is a list, not a JSON object"),
    ({"__metadata__": ["x"]}, b"", "'__metadata__' must map strings to strings"),
    ({"__metadata__": {"a": 1}}, b"", "'__metadata__' must map strings to strings"),
    ({"w": [0, 8]}, b"\0" * 8, "entry 'w' must be an object"),
    ({"w": _entry("F31")}, b"\0" * 8, "entry 'w': unknown dtype 'F31'"),
    ({"w": {"shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "entry 'w': unknown dtype None"),
    ({"w": {**_entry(), "shape": "2"}}, b"\0" * 8, "entry 'w': shape must be a list of non-negative integers"),
    ({"w": _entry(shape=(-2,))}, b"\0" * 8, "entry 'w': shape must be"),
    ({"w": _entry(shape=(2.0,))}, b"\0" * 8, "entry 'w': shape must be"),
    ({"w": {**_entry(), "shape": [True, 2]}}, b"\0" * 8, "entry 'w': shape must be"),
    ({"w": {**_entry(), "data_offsets": None}}, b"\0" * 8, "entry 'w': data_offsets None must be"),
    ({"w": {**_entry(), "data_offsets": [0, 8, 8]}}, b"\0" * 8, "data_offsets [0, 8, 8] must be [begin, end]"),
    ({"w": {**_entry(), "data_offsets": [8]}}, b"\0" * 8, "data_offsets [8] must be"),
    ({"w": {**_entry(), "data_offsets": [0, 8.0]}}, b"\0" * 8, "data_offsets [0, 8.0] must be"),
    ({"w": {**_entry(), "data_offsets": [0.0, 8]}}, b"\0" * 8, "data_offsets [0.0, 8] must be"),
    ({"w": _entry(begin=-8, end=0)}, b"\0" * 8, "data_offsets [-8, 0] must be"),
    ({"w": _entry(begin=8, end=0)}, b"\0" * 8, "data_offsets [8, 0] must be"),
    ({"w": _entry(begin=0, end=8)}, b"\0" * 7, "data_offsets [0, 8] must be [begin, end] inside the 7-byte data section"),
    ({"w": _entry(shape=(3,))}, b"\0" * 8, "entry 'w': shape (3,) of F32 needs 12 bytes but data_offsets span 8"),
    ({"w": _entry("F64", shape=(2,))}, b"\0" * 8, "shape (2,) of F64 needs 16 bytes"),
    ({"w": _entry("I8", shape=(2, 3), end=8)}, b"\0" * 8, "shape (2, 3) of I8 needs 6 bytes"),
])
def test_header_problems_name_the_key(tmp_path, header, data, needle):
    path = _write(tmp_path, _raw(header, data))
    with pytest.raises(CheckpointError) as info:
        read_safetensors_header(path)
    assert needle in str(info.value) and str(path) in str(info.value)


def test_header_length_problems(tmp_path):
    with pytest.raises(CheckpointError, match="shorter than its 8-byte header length"):
        read_safetensors_header(_write(tmp_path, b"\x02\0\0\0\0\0\0"))
    # declared length: one byte more than the file holds after the 8 length bytes
    blob = _raw({}, declared=3)
    with pytest.raises(CheckpointError, match=r"header length 3 exceeds the file \(10 bytes\)"):
        read_safetensors_header(_write(tmp_path, blob))
    ok = _raw({"__metadata__": {}})  # exactly the rest of the file: fine
    assert read_safetensors_header(_write(tmp_path, ok, "ok.safetensors")) == {}
    with pytest.raises(CheckpointError, match="header is not JSON"):
        read_safetensors_header(_write(tmp_path, struct.pack("<Q", 2) + b"\xff{"))
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_safetensors_header(tmp_path / "missing.safetensors")


def test_safetensors_content_is_recognised_whatever_the_suffix(tmp_path):
    model = nn.Linear(3, 2)
    blob = st_save({k: v.detach().clone() for k, v in model.state_dict().items()})
    path = _write(tmp_path, blob, "weights.bin")
    other = nn.Linear(3, 2)
    load_checkpoint(other, path)
    assert torch.equal(other.weight, model.weight) and torch.equal(other.bias, model.bias)
    # a broken header behind a non-safetensors suffix is still reported as a safetensors problem
    bad = _write(tmp_path, _raw({"weight": _entry(shape=(9,))}, b"\0" * 8), "bad.bin")
    with pytest.raises(CheckpointError, match="'weight': shape \\(9,\\) of F32 needs 36 bytes"):
        load_checkpoint(nn.Linear(3, 2), bad)
    # too short to hold a header: read as a torch file, which fails with a named error
    tiny = _write(tmp_path, b"", "tiny.bin")
    with pytest.raises(CheckpointError, match=r"^could not read checkpoint .*tiny\.bin: "):
        load_checkpoint(nn.Linear(3, 2), tiny)


def test_torch_files_old_and_new_formats(tmp_path):
    model = nn.Linear(3, 2)
    legacy = tmp_path / "legacy.pt"
    torch.save(model.state_dict(), legacy, _use_new_zipfile_serialization=False)  # cannot be memory-mapped
    zipped = tmp_path / "zip.pt"
    torch.save(model.state_dict(), zipped)
    for path in (legacy, zipped):
        other = nn.Linear(3, 2)
        load_checkpoint(other, path)
        assert torch.equal(other.weight, model.weight)


# ------------------------------------------------------------------------------ unwrapping
def _lin(seed):
    torch.manual_seed(seed)
    return nn.Linear(3, 2)


def test_wrapper_priority_and_nesting():
    a, b = _lin(1), _lin(2)
    sda, sdb = a.state_dict(), b.state_dict()
    cases = [
        ({"model": sda, "model_ema": sdb}, a),  # "model" is preferred over the EMA copy
        ({"state_dict": sda, "model_ema": sdb}, a),
        ({"model_ema": sda, "state_dict_ema": sdb}, a),
        ({"state_dict_ema": sda, "module": sdb}, a),
        ({"module": sda, "epoch": 3}, a),
        ({"model": "a name", "state_dict": sdb}, b),  # a non-mapping under a wrapper key is skipped
        ({"model": {"state_dict": {"module": sda}}}, a),  # three wrappers deep
    ]
    for obj, want in cases:
        dst = nn.Linear(3, 2)
        load_checkpoint(dst, obj)
        assert torch.equal(dst.weight, want.weight), obj.keys()


def test_prefixes_are_stripped_repeatedly_and_non_tensors_dropped():
    src = _lin(3)
    sd = {"module._orig_mod.module.weight": src.weight.detach(), "_orig_mod._orig_mod.bias": src.bias.detach(),
          "step": 10, "note": "x"}
    dst = nn.Linear(3, 2)
    load_checkpoint(dst, sd)
    assert torch.equal(dst.weight, src.weight) and torch.equal(dst.bias, src.bias)


def test_unwrap_errors():
    keys = {f"k{i:02d}": i for i in range(12)}
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(nn.Linear(3, 2), keys, source="mine.pt")
    assert str(info.value) == ("checkpoint mine.pt contains no tensors (top-level keys: "
                               f"{[f'k{i:02d}' for i in range(10)]})")
    with pytest.raises(CheckpointError, match="^the state dict contains no tensors"):
        load_checkpoint(nn.Linear(3, 2), {})


def test_wrapper_holding_a_list_is_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(nn.Linear(3, 2), path)
    assert str(info.value) == f"checkpoint {path} does not contain a state dict (got list)"


# ------------------------------------------------------------------------------ key/shape problems
def test_problem_lists_are_counted_and_truncated():
    big = nn.Sequential(*[nn.Linear(1, 1, bias=False) for _ in range(25)])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(big, {"0.weight": torch.zeros(1, 1), "x.weight": torch.zeros(1)})
    msg = str(info.value)
    missing = sorted(f"{i}.weight" for i in range(1, 25))
    shown = ", ".join(missing[:20])
    assert msg == (f"the state dict does not fit Sequential: 24 missing keys: {shown}, ... (4 more); "
                   f"1 unexpected keys: x.weight")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(nn.Linear(3, 2), {"weight": torch.zeros(2, 4), "bias": torch.zeros(2)}, strict=False)
    assert str(info.value) == ("the state dict does not fit Linear: 1 shape mismatches: "
                               "weight: checkpoint (2, 4) vs model (2, 3)")


def test_non_strict_load_warns_and_loads_what_fits(caplog):
    src = _lin(4)
    dst = nn.Linear(3, 2)
    with caplog.at_level(logging.WARNING, logger="largekernel.checkpoint"):
        load_checkpoint(dst, {"weight": src.weight.detach(), "extra": torch.zeros(1)}, strict=False)
    assert torch.equal(dst.weight, src.weight)
    assert "non-strict load: 1 missing keys: bias; 1 unexpected keys: extra" in caplog.text


def test_state_that_cannot_be_copied_is_a_checkpoint_error():
    meta = {"weight": torch.empty(2, 3, device="meta"), "bias": torch.zeros(2)}
    with pytest.raises(CheckpointError, match=r"^the state dict does not fit Linear: .*meta") as info:
        load_checkpoint(nn.Linear(3, 2), meta)
    assert "\n" not in str(info.value)


def test_bad_model_argument():
    with pytest.raises(TypeError, match="model must be an nn.Module, got dict"):
        load_checkpoint({}, {})


# ------------------------------------------------------------------------------ training -> deploy
def _tiny(deploy=False, dtype=torch.float32):
    torch.manual_seed(0)
    model = largekernel.create_model("unireplknet_a", deploy=deploy, **KW).to(dtype)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_train_form_checkpoint_converts_into_a_deploy_model(dtype, caplog):
    train = _tiny(dtype=dtype).eval()
    expected = largekernel.reparameterize(train).state_dict()
    deploy = _tiny(deploy=True, dtype=dtype)
    with caplog.at_level(logging.INFO, logger="largekernel.checkpoint"):
        load_checkpoint(deploy, {"model": train.state_dict()})
    assert "converting a training-form checkpoint to the deploy form" in caplog.text
    got = deploy.state_dict()
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert got[k].dtype == dtype
        torch.testing.assert_close(got[k], v, rtol=0, atol=0, msg=k)
    # marked deploy by reparameterize() (largekernel_form) instead of the deploy kwarg: converts too
    fused = largekernel.reparameterize(_tiny())
    load_checkpoint(fused, train.state_dict())
    for k, v in fused.state_dict().items():
        torch.testing.assert_close(v.to(dtype), expected[k], rtol=1e-5, atol=1e-6, msg=k)


def test_no_conversion_when_it_cannot_apply():
    train_sd = _tiny().state_dict()
    # not strict: no conversion; the common keys load, the deploy-only ones keep their values
    deploy = _tiny(deploy=True)
    before = {k: v.clone() for k, v in deploy.state_dict().items()}
    load_checkpoint(deploy, train_sd, strict=False)
    after = deploy.state_dict()
    only_deploy = set(after) - set(train_sd)
    assert only_deploy and all(torch.equal(before[k], after[k]) for k in only_deploy)
    assert all(torch.equal(after[k], train_sd[k]) for k in set(after) & set(train_sd))
    # a training checkpoint of another configuration: the twin does not take it
    other = {k: v for k, v in train_sd.items() if not k.startswith("head.")}
    with pytest.raises(CheckpointError, match="missing keys"):
        load_checkpoint(_tiny(deploy=True), other)
    # a deploy model that does not know how it was built cannot get a twin
    plain = _tiny(deploy=True)
    del plain.largekernel_config
    with pytest.raises(CheckpointError, match="unexpected keys"):
        load_checkpoint(plain, train_sd)
    # a training-form model is never converted
    with pytest.raises(CheckpointError, match="missing keys"):
        load_checkpoint(_tiny(), largekernel.reparameterize(_tiny()).state_dict())


# ------------------------------------------------------------------------------ the written document
def test_document_written_and_embedded(tmp_path):
    model = _tiny()
    path = save_checkpoint(model, tmp_path / "m.safetensors", metadata={"epoch": 2, "sizes": (1, 2), "tags": {"a"}})
    text = config_path_for(path).read_text()
    doc = json.loads(text)
    assert doc == {"format": "largekernel-checkpoint-v1", "name": "unireplknet_a",
                   "kwargs": json.loads(json.dumps(model.largekernel_config["kwargs"])), "form": "train",
                   "metadata": {"epoch": 2, "sizes": [1, 2], "tags": ["a"]}}
    assert text == json.dumps(doc, indent=2, sort_keys=True)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"largekernel_config": text}
    assert read_checkpoint_document(path) == doc
    config_path_for(path).unlink()
    assert read_checkpoint_document(path) == doc  # the embedded copy
    plain = save_checkpoint(nn.Linear(2, 2), tmp_path / "p.safetensors")
    assert json.loads(config_path_for(plain).read_text()) == {
        "format": "largekernel-checkpoint-v1", "name": None, "kwargs": {}, "form": "train", "metadata": {}}
    with pytest.raises(ValueError, match="JSON-serialisable: object is not JSON serialisable"):
        save_checkpoint(nn.Linear(2, 2), tmp_path / "q.safetensors", metadata={"x": object()})


def test_tied_and_strided_tensors_are_saved(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    model[1].weight = model[0].weight  # tied: aliased storage
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(16.0).view(4, 4).t())  # a transposed (strided) view's values
    path = save_checkpoint(model, tmp_path / "tied.safetensors")
    other = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    load_checkpoint(other, path)
    assert torch.equal(other[0].weight, model[0].weight) and torch.equal(other[1].weight, model[0].weight)


def test_document_reading_limits(tmp_path):
    path = save_checkpoint(nn.Linear(2, 2), tmp_path / "p.safetensors")
    cfg = config_path_for(path)
    cfg.write_text(json.dumps({"format": "largekernel-checkpoint-v1", "name": None, "form": "nonsense"}))
    assert read_checkpoint_document(path, validate=False)["form"] == "nonsense"
    with pytest.raises(CheckpointError, match=f"invalid config file {cfg}: .*form"):
        read_checkpoint_document(path)
    with open(cfg, "wb") as f:  # sparse: 16 MiB + 1 byte without writing them
        f.truncate((16 << 20) + 1)
    with pytest.raises(CheckpointError, match=r"larger than 16777216 bytes"):
        read_checkpoint_document(path)
    with open(cfg, "wb") as f:
        f.write(b"{}")
        f.truncate(16 << 20)  # exactly the limit: read (and rejected only as JSON)
    with pytest.raises(CheckpointError, match="not JSON"):
        read_checkpoint_document(path)
    cfg.unlink()
    cfg.mkdir()  # not a file: the embedded copy is used
    assert read_checkpoint_document(path)["name"] is None
    with pytest.raises(CheckpointNotFoundError, match="checkpoint file not found"):
        read_checkpoint_document(tmp_path / "none.safetensors")
    bare = _write(tmp_path, st_save({"w": torch.zeros(1)}), "bare.safetensors")
    with pytest.raises(CheckpointError, match="no config found for .*bare.safetensors"):
        read_checkpoint_document(bare)


# ------------------------------------------------------------------------------ building from a config
def test_build_model_checked_paths():
    with pytest.raises(CheckpointError, match="does not name a registered model"):
        build_model_checked("", {}, source="s")
    with pytest.raises(CheckpointError, match="does not name a registered model"):
        build_model_checked(None, {}, source="s")
    with pytest.raises(CheckpointError, match="^s: invalid model config"):
        build_model_checked("unireplknet_a", [1], source="s")
    with pytest.raises(CheckpointError, match="^s: model name 'nope' is not a registered model"):
        build_model_checked("nope", None, source="s")
    m = build_model_checked("unireplknet_a", None, source="s")  # None kwargs: the defaults
    assert m.num_classes == largekernel.create_model("unireplknet_a").num_classes
    d = build_model_checked("unireplknet_a", KW, source="s", deploy=True)
    assert not any("origin_bn" in k for k in d.state_dict())
    assert d.largekernel_config["kwargs"].get("deploy") is True


def test_build_model_checked_reparameterises_models_without_a_deploy_kwarg():
    name = next(n for n in ("convnext_atto", "inception_next_atto", "lsnet_t")
                if "deploy" not in inspect.signature(model_entrypoint(n)).parameters)
    fresh = largekernel.create_model(name, num_classes=2)
    d = build_model_checked(name, {"num_classes": 2}, source="s", deploy=True)
    assert getattr(d, "largekernel_form", None) == "deploy"
    t = build_model_checked(name, {"num_classes": 2}, source="s", deploy=False)
    assert set(t.state_dict()) == set(fresh.state_dict())


def test_build_model_checked_compares_shapes():
    shapes = {k: tuple(v.shape) for k, v in _tiny().state_dict().items()}
    assert isinstance(build_model_checked("unireplknet_a", KW, source="s", shapes=shapes), nn.Module)
    bad = dict(shapes, **{"head.weight": (7, 8)})
    with pytest.raises(CheckpointError) as info:
        build_model_checked("unireplknet_a", KW, source="s", shapes=bad)
    assert str(info.value) == ("s does not fit unireplknet_a with its saved kwargs: 1 shape mismatches: "
                               "head.weight: checkpoint (7, 8) vs model (3, 8)")
    fewer = {k: v for k, v in shapes.items() if k != "head.bias"}
    with pytest.raises(CheckpointError, match="1 missing keys: head.bias"):
        build_model_checked("unireplknet_a", KW, source="s", shapes=fewer)
    # key-only differences are allowed for a deploy build (a training checkpoint may convert)
    assert build_model_checked("unireplknet_a", KW, source="s", shapes=shapes, deploy=True) is not None
    with pytest.raises(CheckpointError, match="shape mismatches"):
        build_model_checked("unireplknet_a", KW, source="s", shapes=bad, deploy=True)


def test_build_model_checked_memory_guard(monkeypatch):
    import largekernel.utils.memory as memory

    seen = []
    monkeypatch.setattr(memory, "check_memory", lambda need, what, allow_large, override: seen.append(
        (need, what, allow_large, override)))
    model = build_model_checked("unireplknet_a", KW, source="src.st", allow_large=True)
    params = sum(t.numel() for t in model.state_dict().values())
    assert seen == [(2 * 4 * params, "loading unireplknet_a from src.st", True, "allow_large=True")]


def test_create_model_from_a_deploy_checkpoint_and_a_torch_file(tmp_path):
    fused = largekernel.reparameterize(_tiny())
    path = save_checkpoint(fused, tmp_path / "d.safetensors")
    rebuilt = create_model_from(path)
    assert rebuilt.largekernel_form == "deploy" and not rebuilt.training
    train = create_model_from(save_checkpoint(_tiny(), tmp_path / "t.safetensors"))
    assert train.training and getattr(train, "largekernel_form", None) != "deploy"


def test_long_multiline_errors_are_one_truncated_line(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("never",))

    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2, 3), "x": Evil()}, path)
    try:
        torch.load(path, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch's own message, the reference
        words, multiline = " ".join(str(err).split()), "\n" in str(err)
    assert len(words) > 500 and multiline  # the case worth checking: long and multi-line
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(nn.Linear(3, 2), path)
    msg = str(info.value)
    assert msg.endswith(" Details: " + words[:500] + "...")
    # short messages stay whole: no ellipsis
    empty = _write(tmp_path, b"", "e.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(nn.Linear(3, 2), empty)
    assert not str(info.value).endswith("...")


def test_one_line_boundaries():
    from largekernel.checkpoint import _one_line

    assert _one_line(ValueError("a\n  b\tc ")) == "a b c"
    assert _one_line(ValueError("x" * 500)) == "x" * 500
    assert _one_line(ValueError("x" * 501)) == "x" * 500 + "..."
    assert _one_line(ValueError()) == ""
