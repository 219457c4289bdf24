"""Fuzzing the input surface (hypothesis): options, command lines, model.json, safetensors headers,
training checkpoints and image files.

The only outcomes allowed are success or a documented error (``largekernel.errors`` classes,
``FileNotFoundError``, or exit code 2 on the command line, one line on stderr); no partial file
may remain. Examples are derandomised and few, so the module stays within ~30 s of CPU; the
command line is fuzzed in-process, plus a handful of real subprocesses for the exit code, the
single stderr line and leftover processes.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from dataclasses import fields

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import largekernel
from largekernel.checkpoint import config_path_for, create_model_from, read_safetensors_header, save_checkpoint
from largekernel.cli.predict import load_image as predict_load_image
from largekernel.config_schema import TrainConfig
from largekernel.data.folder import load_image as folder_load_image
from largekernel.errors import CheckpointError, ConfigError, ImageError, LargeKernelError
from largekernel.train.config import config_from_dict
from largekernel.train.loading import load_trained_model

from hardening_helpers import bomb_png, run_cli

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
DOCUMENTED = (LargeKernelError, FileNotFoundError)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _no_temp_files(root):
    assert [p for p in root.rglob("*") if p.name.endswith(".tmp")] == []


# ------------------------------------------------------------------------------- options
_POSITIVE_FLOATS = {"lr"}
_NON_NEGATIVE_FLOATS = {"min_lr", "weight_decay", "warmup_epochs", "mixup", "cutmix"}
_UNIT_FLOATS = {"momentum", "mixup_prob", "ema_decay"}
_COUNTS = {"epochs", "batch_size", "accum_steps", "keep_checkpoints", "eval_every"}
_FIELDS = [f.name for f in fields(TrainConfig)]


def _real(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _in(value, low, high, *, low_open=False, integer=False):
    """Independent statement of a numeric rule: a real, finite number in [low, high]."""
    if not _real(value) or not math.isfinite(value):
        return False
    if integer and not float(value).is_integer():
        return False
    return (value > low if low_open else value >= low) and value <= high


@FUZZ
@given(key=st.sampled_from(_FIELDS), value=json_values)
def test_every_option_value_is_accepted_or_named(key, value):
    rules = {**{k: dict(low=0, high=math.inf, low_open=True) for k in _POSITIVE_FLOATS},
             **{k: dict(low=0, high=math.inf) for k in _NON_NEGATIVE_FLOATS},
             **{k: dict(low=0, high=1) for k in _UNIT_FLOATS},
             **{k: dict(low=1, high=2**31 - 1, integer=True) for k in _COUNTS}}
    try:
        cfg = config_from_dict({key: value})
    except ConfigError as err:
        assert key in str(err) and "\n" not in str(err)
        if key in rules:  # refused: then it really broke the rule
            assert not _in(value, **rules[key]), (key, value, str(err))
        return
    got = getattr(cfg, key)
    if key in rules:  # accepted: the stored value obeys the rule (strings like "1e-3" are converted)
        assert _in(got, **rules[key]), (key, value, got)
        if _real(value):
            assert got == value
    if isinstance(got, float):
        assert math.isfinite(got)


_override_text = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(_FIELDS + ["model_kwargs.dims", "model_kwargs.x.y", "lr.x"]),
              st.sampled_from(["nan", ".inf", "-1", "0", "1", "1e9", "2.5", "true", "null", "[1,2]", "{a: 1}",
                               "'x'", "[", "!!python/object:os.system", "&a [*a]", "1e-3", "adamw", "test"])),
    st.text(alphabet="abcdefgh=._-[]{}:, 019", max_size=16),
)
_flags = st.lists(st.sampled_from([["--lr", "nan"], ["--epochs", "-2"], ["--epochs", "x"], ["--quiet"],
                                    ["--model", "nope"], ["--model-kwargs", "[1]"], ["--model-kwargs", "{"],
                                    ["--device", "gpu"], ["--bad-images", "skip"], ["--image-size", "0"],
                                    ["--bogus"], ["--config", "/nonexistent.yaml"]]), max_size=3)


@settings(FUZZ, max_examples=25)
@given(overrides=st.lists(_override_text, max_size=4), flags=_flags)
def test_train_command_line_is_valid_or_a_documented_error(overrides, flags, monkeypatch, caplog, tmp_path):
    import largekernel.train.trainer as trainer

    received = []

    def fake_train(cfg):  # everything up to the training loop runs for real, in-process
        received.append(cfg)
        return {"final": {"top1": 1.0}}

    monkeypatch.setattr(trainer, "train", fake_train)
    argv = ["train", *[a for f in flags for a in f], *overrides, "--output", tmp_path / "run"]
    try:
        code, errors = run_cli(argv, caplog)
    except SystemExit as exc:  # argparse: usage line on stderr, exit 2
        assert exc.code == 2
        return
    assert code in (0, 2), errors
    if code == 2:
        assert len(errors) == 1 and "\n" not in errors[0] and not received
        return
    # accepted: a complete, valid config with finite numbers everywhere
    (cfg,) = received
    assert cfg.validate() is cfg
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float):
            assert math.isfinite(value), f.name


@settings(FUZZ, max_examples=6)
@given(picks=st.lists(st.sampled_from(["PNG", "JPEG", "GIF", "missing", "text", "bomb"]), min_size=1, max_size=3),
       flips=st.lists(st.integers(0, 400), max_size=3))
def test_predict_command_line_fuzz(tiny_run, tmp_path_factory, caplog, capsys, picks, flips):
    root = tmp_path_factory.mktemp("pred")
    paths = []
    for i, kind in enumerate(picks):
        path = root / f"{i}.{kind.lower()}"
        if kind == "bomb":
            bomb_png(path)
        elif kind == "text":
            path.write_text("not an image")
        elif kind != "missing":
            raw = bytearray(_IMAGES[kind])
            for pos in flips:
                raw[pos % len(raw)] ^= 0xFF
            path.write_bytes(bytes(raw))
        paths.append(path)
    capsys.readouterr()
    code, errors = run_cli(["predict", tiny_run, *paths, "--json"], caplog)
    lines = capsys.readouterr().out.strip().splitlines()
    assert code in (0, 2)
    if code == 2:
        assert len(errors) == 1 and any(str(p) in errors[0] for p in paths)
        assert lines == []  # nothing printed for the images before the bad one
    else:
        assert [json.loads(line)["image"] for line in lines] == [str(p) for p in paths]


_bad_numbers = st.one_of(st.integers(-5, 3), st.sampled_from(["x", "nan", "1e400", "-0"]),
                         st.integers(2**20 + 1, 2**40))


@settings(FUZZ, max_examples=12)
@given(limit=_bad_numbers, batch=_bad_numbers, size=st.one_of(st.none(), st.sampled_from([-1, 0, 2**20, 10**9])))
def test_evaluate_options_fuzz(tiny_run, tmp_path_factory, caplog, limit, batch, size):
    out = tmp_path_factory.mktemp("ev")
    argv = ["evaluate", tiny_run, "--limit", limit, "--batch-size", batch, "--output", out, "--json"]
    if size is not None:
        argv += ["--image-size", size]
    try:
        code, errors = run_cli(argv, caplog)
    except SystemExit as exc:
        assert exc.code == 2
        return
    assert code in (0, 2)
    if code == 2:
        assert len(errors) == 1
        assert not (out / "eval.json").exists()
    else:
        assert json.loads((out / "eval.json").read_text())["count"] >= 1
    _no_temp_files(out)


# ----------------------------------------------------------------------------- model.json
@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    model = largekernel.create_model("unireplknet_a", num_classes=3, depths=(1, 1, 1, 1), dims=(8, 8, 8, 8),
                                     kernel_sizes=((3,), (3,), (3,), (3,)))
    path = save_checkpoint(model, tmp_path_factory.mktemp("ck") / "m.safetensors")
    return path.read_bytes(), config_path_for(path).read_text()


def _mutations(doc):
    keys = st.sampled_from(["name", "kwargs", "form", "format", "metadata"])
    kwarg_keys = st.sampled_from(["dims", "depths", "kernel_sizes", "num_classes", "in_chans", "drop_path_rate",
                                  "bogus"])
    replace_top = st.builds(lambda k, v: {**doc, k: v}, keys, json_values)
    drop_top = st.builds(lambda k: {a: b for a, b in doc.items() if a != k}, keys)
    replace_kwarg = st.builds(lambda k, v: {**doc, "kwargs": {**doc["kwargs"], k: v}}, kwarg_keys,
                              json_values | st.lists(st.integers(-3, 2**21), max_size=5))
    return st.one_of(replace_top, drop_top, replace_kwarg, json_values)


@FUZZ
@given(data=st.data())
def test_model_json_fuzz(small_checkpoint, tmp_path_factory, data):
    blob, text = small_checkpoint
    doc = data.draw(_mutations(json.loads(text)))
    root = tmp_path_factory.mktemp("mj")
    path = root / "m.safetensors"
    path.write_bytes(blob)
    try:
        encoded = json.dumps(doc)
    except ValueError:
        return
    config_path_for(path).write_text(encoded)
    try:
        model = create_model_from(path)
    except CheckpointError as err:
        assert str(root) in str(err) and "\n" not in str(err)
    else:
        assert model.num_classes == 3
    _no_temp_files(root)
    assert sorted(p.name for p in root.iterdir()) == ["m.json", "m.safetensors"]  # loaders write nothing


_DTYPES = ["F32", "F16", "I64", "BOOL", "X9", 3, None]


@FUZZ
@given(data=st.data())
def test_safetensors_header_fuzz(small_checkpoint, tmp_path_factory, data):
    blob, text = small_checkpoint
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    how = data.draw(st.sampled_from(["flip", "entry", "length", "truncate"]))
    if how == "flip":
        raw = bytearray(blob)
        for i in data.draw(st.lists(st.integers(0, 8 + n - 1), min_size=1, max_size=4)):
            raw[i] = data.draw(st.integers(0, 255))
        raw = bytes(raw)
    elif how == "entry":
        key = data.draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
        header[key] = data.draw(st.one_of(json_values, st.fixed_dictionaries({
            "dtype": st.sampled_from(_DTYPES), "shape": st.lists(st.integers(-2, 2**40), max_size=3),
            "data_offsets": st.lists(st.integers(-5, 2**40), min_size=0, max_size=3)})))
        head = json.dumps(header).encode()
        raw = len(head).to_bytes(8, "little") + head + blob[8 + n:]
    elif how == "length":
        raw = data.draw(st.integers(0, 2**64 - 1)).to_bytes(8, "little") + blob[8:]
    else:
        raw = blob[: data.draw(st.integers(0, len(blob) - 1))]
    root = tmp_path_factory.mktemp("st")
    path = root / "m.safetensors"
    path.write_bytes(raw)
    config_path_for(path).write_text(text)
    for call in (read_safetensors_header, create_model_from):
        try:
            call(path)
        except CheckpointError as err:
            assert "\n" not in str(err)
    _no_temp_files(root)


@settings(FUZZ, max_examples=15)
@given(data=st.data())
def test_training_checkpoint_fuzz(tiny_run, tmp_path_factory, data):
    blob = (tiny_run / "train_checkpoint.pt").read_bytes()
    raw = bytearray(blob)
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        for i in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=6)):
            raw[i] = data.draw(st.integers(0, 255))
    root = tmp_path_factory.mktemp("pt")
    path = root / "train_checkpoint.pt"
    path.write_bytes(bytes(raw))
    try:
        load_trained_model(path)
    except DOCUMENTED as err:
        assert "\n" not in str(err)
    _no_temp_files(root)


# ---------------------------------------------------------------------------------- images
def _image_bytes(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


_IMAGES = {fmt: _image_bytes(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")}


@settings(FUZZ, max_examples=80)
@given(fmt=st.sampled_from(sorted(_IMAGES)), cuts=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                           max_size=6),
       truncate=st.one_of(st.none(), st.integers(0, 10_000)))
def test_image_file_fuzz(tmp_path_factory, fmt, cuts, truncate):
    raw = bytearray(_IMAGES[fmt])
    for pos, byte in cuts:
        raw[pos % len(raw)] = byte
    if truncate is not None:
        raw = raw[: truncate % (len(raw) + 1)]
    root = tmp_path_factory.mktemp("img")
    path = root / f"x.{fmt.lower()}"
    path.write_bytes(bytes(raw))
    for call in (lambda: folder_load_image(path, 3, 8), lambda: predict_load_image(path, 1, 8, [0.5], [0.25])):
        try:
            x = call()
        except ImageError as err:
            assert str(path) in str(err) and "\n" not in str(err)
        else:
            assert x.shape[-2:] == (8, 8) and torch.isfinite(x).all()


# ------------------------------------------------------------------ real processes (a few)
def _processes_mentioning(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def test_subprocess_errors_exit_2_with_one_line(tiny_run, tmp_path):
    (tmp_path / "file").write_text("x")
    bomb = bomb_png(tmp_path / "bomb.png")
    commands = {
        "nan": ["train", "min_lr=nan", "warmup_epochs=0", "max_steps=1", "--output", str(tmp_path / "nan-run")],
        "file": ["train", "--output", str(tmp_path / "file"), "--max-steps", "1"],
        "bomb": ["predict", str(tiny_run), str(bomb)],
        "limit": ["evaluate", str(tiny_run), "--limit", "-1", "--output", str(tmp_path / "ev")],
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {name: subprocess.Popen([sys.executable, "-m", "largekernel.cli", *argv], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, argv in commands.items()}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        lines = err.strip().splitlines()
        assert proc.returncode == 2, (name, err)
        assert len(lines) == 1 and lines[0].startswith("ERROR largekernel:"), (name, err)
        assert "Traceback" not in err and out == ""
    assert _processes_mentioning(str(tmp_path)) == []
    assert not (tmp_path / "nan-run").exists() and (tmp_path / "file").read_text() == "x"
    assert not (tmp_path / "ev").exists()
    _no_temp_files(tmp_path)
    _no_temp_files(tiny_run)
