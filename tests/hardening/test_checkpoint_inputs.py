"""Malformed checkpoint configs, shape mismatches, configs that would allocate more than the file
holds, and `info` on a checkpoint without data-set metadata."""

from __future__ import annotations

import json

import pytest
import torch

import largekernel
from largekernel.checkpoint import (
    CheckpointError,
    config_path_for,
    create_model_from,
    read_safetensors_header,
    save_checkpoint,
)
from largekernel.models import registry
from largekernel.train import checkpointing as ckpt
from largekernel.train.loading import load_trained_model

from hardening_helpers import run_cli

KW = dict(num_classes=4, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), kernel_sizes=((3,), (5,), (3,), (3,)))


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = largekernel.create_model("unireplknet_a", **KW)
    return save_checkpoint(model, tmp_path / "m.safetensors")


def _edit_doc(path, change):
    doc_path = config_path_for(path)
    doc = json.loads(doc_path.read_text())
    doc_path.write_text(json.dumps(change(doc)))


@pytest.mark.parametrize("change, needle", [
    (lambda d: [d], "must be a JSON object"),                            # model.json is a list
    (lambda d: "unireplknet_a", "must be a JSON object"),                # ... or a string
    (lambda d: {**d, "kwargs": "dims=8"}, "kwargs"),                     # kwargs a string
    (lambda d: {**d, "kwargs": [1, 2]}, "kwargs"),
    (lambda d: {**d, "name": 7}, "name"),
    (lambda d: {**d, "name": "unireplknet_zz"}, "not a registered model"),
    (lambda d: {**d, "kwargs": {**d["kwargs"], "bogus": 1}}, "bogus"),     # TypeError inside the model
    (lambda d: {**d, "kwargs": {**d["kwargs"], "dims": "wide"}}, "dims"),  # error deep inside the constructor
    (lambda d: {**d, "kwargs": {**d["kwargs"], "drop_path_rate": float("nan")}}, "drop_path_rate"),
    (lambda d: {**d, "form": "fused"}, "form"),
    (lambda d: {**d, "format": "largekernel-checkpoint-v99"}, "format"),
    (lambda d: {**d, "metadata": "none"}, "metadata"),
    (lambda d: {**d, "metadata": {"data": {"num_classes": -1}}}, "metadata.data.num_classes"),
    (lambda d: {**d, "metadata": {"data": {"in_chans": 1, "mean": [0.5, 0.5], "std": [1, 1]}}}, "in_chans"),
])
def test_malformed_model_json_is_one_checkpoint_error(saved, change, needle):
    _edit_doc(saved, change)
    with pytest.raises(CheckpointError) as info:
        create_model_from(saved)
    msg = str(info.value)
    assert needle in msg and str(saved.with_suffix("")) in msg
    assert "\n" not in msg


def test_invalid_json_and_missing_file(saved, tmp_path):
    config_path_for(saved).write_text("{not json")
    with pytest.raises(CheckpointError, match="not JSON"):
        create_model_from(saved)
    with pytest.raises(CheckpointError, match="not found") as info:
        create_model_from(tmp_path / "nope.safetensors")
    assert isinstance(info.value, FileNotFoundError)


def test_shape_mismatch_names_key_and_both_shapes_before_building(saved, monkeypatch):
    _edit_doc(saved, lambda d: {**d, "kwargs": {**d["kwargs"], "dims": [8, 16, 24, 40]}})
    real_builds = []
    original = registry.create_model

    def spy(name, **kwargs):
        real_builds.append(torch.empty(0).device.type)  # the device models are being built on
        return original(name, **kwargs)

    monkeypatch.setattr(registry, "create_model", spy)
    with pytest.raises(CheckpointError) as info:
        create_model_from(saved)
    msg = str(info.value)
    assert "head.weight: checkpoint (4, 32) vs model (4, 40)" in msg
    assert real_builds and set(real_builds) == {"meta"}  # nothing was allocated for real


def test_huge_dims_are_refused_from_the_header_alone(saved):
    # 2^20 channels per stage would be terabytes; the header says the file holds 8-32
    _edit_doc(saved, lambda d: {**d, "kwargs": {**d["kwargs"], "dims": [2**20] * 4}})
    with pytest.raises(CheckpointError, match="does not fit"):
        create_model_from(saved)


def test_safetensors_header_is_checked_against_the_file(saved):
    blob = bytearray(saved.read_bytes())
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    header["head.weight"]["shape"] = [4, 3200]  # claims more bytes than data_offsets span
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (n - len(text)) if len(text) <= n else b""
    if len(text) != n:
        pytest.skip("edited header does not fit in place")
    saved.write_bytes(bytes(blob[:8]) + text + bytes(blob[8 + n:]))
    with pytest.raises(CheckpointError, match="'head.weight'.*needs 51200 bytes"):
        read_safetensors_header(saved)
    with pytest.raises(CheckpointError, match="head.weight"):
        create_model_from(saved)


def test_training_checkpoint_shape_mismatch_names_key_and_shapes(tiny_run, tmp_path, caplog):
    state = torch.load(tiny_run / "train_checkpoint.pt", weights_only=True)
    w = state["model"]["head.weight"]
    state["model"]["head.weight"] = torch.zeros(w.shape[0], w.shape[1] + 3)
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(CheckpointError) as info:
        load_trained_model(bad)
    shape = tuple(w.shape)
    assert f"head.weight: checkpoint ({shape[0]}, {shape[1] + 3}) vs model {shape}" in str(info.value)
    code, errors = run_cli(["evaluate", bad], caplog)
    assert code == 2 and len(errors) == 1 and "head.weight" in errors[0]


@pytest.mark.parametrize("entry, value, needle", [
    ("model_config", "unireplknet_a", "model_config"),
    ("model_config", {"name": "unireplknet_a", "kwargs": "x"}, "kwargs"),
    ("data_info", ["digits"], "data_info"),
    ("ema", {"model": 3}, "ema"),
    ("config", [1], "config"),
])
def test_malformed_training_checkpoint_entries(tiny_run, tmp_path, entry, value, needle, caplog):
    state = torch.load(tiny_run / "train_checkpoint.pt", weights_only=True)
    state[entry] = value
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match=needle):
        ckpt.load_training_checkpoint(bad)
    # every command that reads checkpoints gives the same one-line error (all three for one case)
    commands = [["info", bad]] + ([["evaluate", bad], ["predict", bad, bad]] if entry == "ema" else [])
    for command in commands:
        code, errors = run_cli(command, caplog)
        assert code == 2 and len(errors) == 1 and str(bad) in errors[0], (command, errors)


def test_info_on_one_channel_checkpoint_without_metadata(tmp_path, caplog, capsys):
    model = largekernel.create_model("unireplknet_a", in_chans=1, **KW)
    path = save_checkpoint(model, tmp_path / "grey.safetensors")  # no data-set metadata
    code, errors = run_cli(["info", path, "--json", "--image-size", "32"], caplog)
    assert code == 0, errors
    out = json.loads(capsys.readouterr().out)
    assert out["input"] == [1, 1, 32, 32]
    # an independent count: the MACs of the same model built directly
    from largekernel.models.counting import count_macs

    assert out["macs"] == count_macs(model.eval(), (1, 1, 32, 32))
