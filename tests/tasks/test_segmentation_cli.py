"""End to end: ``largekernel train --task segment``, ``evaluate``, ``predict`` (PNG and NIfTI), resume."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from largekernel.cli import main
from largekernel.data.segmentation import build_segmentation_dataset
from largekernel.tasks.segmentation.commands import load_segmentation_model

TINY = ["--task", "segment", "--model", "lk_encoder", "--batch-size", "8", "--train-subset", "16",
        "--eval-subset", "8", "--quiet", "--no-plots", "threads=1", "warmup_epochs=0",
        "model_kwargs={dims: [4, 8, 8, 8], depths: [1, 1, 1, 1], kernel_sizes: [5, 3, 3, 3]}",
        "segmentation={stem_channels: 4, deep_supervision: true, decoder: unetpp}"]


@pytest.fixture(scope="module")
def run2d(tmp_path_factory):
    out = tmp_path_factory.mktemp("seg2d")
    assert main(["train", *TINY, "--data", "shapes-2d", "--image-size", "16", "--epochs", "2",
                 "--output", str(out)]) == 0
    return out


def test_train_writes_segmentation_artefacts(run2d):
    summary = json.loads((run2d / "metrics.json").read_text())
    assert summary["task"] == "segment" and summary["steps"] == 4
    final = summary["final"]
    assert len(final["dice"]) == 3 and all(d is None or 0 <= d <= 1 for d in final["dice"])
    doc = json.loads((run2d / "model.json").read_text())
    assert doc["name"] == "segmentation" and doc["form"] == "deploy"
    assert doc["kwargs"]["decoder"] == "unetpp" and doc["metadata"]["data"]["spatial_dims"] == 2


def test_evaluate_train_and_deploy_checkpoints_agree(run2d, capsys):
    results = []
    for name in ("train_checkpoint.pt", "model.safetensors"):
        capsys.readouterr()
        assert main(["evaluate", str(run2d / name), "--limit", "20", "--json",
                     "--output", str(run2d / f"e-{name}")]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0]["dice"] == pytest.approx(results[1]["dice"], abs=1e-3)
    assert results[0]["count"] == 20
    summary = json.loads((run2d / "metrics.json").read_text())
    # training evaluated the first 8 test images; evaluate --limit 8 must agree with it
    capsys.readouterr()
    assert main(["evaluate", str(run2d), "--limit", "8", "--json", "--output", str(run2d / "e8")]) == 0
    assert json.loads(capsys.readouterr().out)["dice"] == pytest.approx(summary["final"]["dice"], abs=1e-3)


def test_predict_png_matches_direct_inference(run2d, tmp_path, capsys):
    from PIL import Image

    ds = build_segmentation_dataset("shapes-2d", "test", image_size=16)
    raw, _ = ds.raw(0)
    img = (raw[0].numpy() * 255).round().astype(np.uint8)[:15, :13]  # odd size, unlike training
    Image.fromarray(img).save(tmp_path / "a.png")
    assert main(["predict", str(run2d), str(tmp_path / "a.png"), "--output", str(tmp_path / "out"), "--json"]) == 0
    line = json.loads(capsys.readouterr().out)
    mask = np.asarray(Image.open(tmp_path / "out" / "a_mask.png"))
    assert line["mask"].endswith("a_mask.png") and mask.shape == (15, 13)
    model = load_segmentation_model(run2d).model
    x = (torch.from_numpy(img).float()[None, None] / 255 - ds.info.mean[0]) / ds.info.std[0]
    with torch.no_grad():
        expected = model(x).argmax(1)[0].numpy()
    assert np.array_equal(mask, expected)


def test_2d_model_segments_a_nifti_volume_slice_by_slice(run2d, tmp_path, capsys):
    import nibabel as nib

    vol = np.random.default_rng(1).random((10, 9, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "v.nii"))
    assert main(["predict", str(run2d), str(tmp_path / "v.nii"), "--output", str(tmp_path / "p")]) == 0
    mask = np.asarray(nib.load(str(tmp_path / "p" / "v_mask.nii.gz")).dataobj)
    model = load_segmentation_model(run2d).model
    info = json.loads((run2d / "model.json").read_text())["metadata"]["data"]
    assert info["slice_axis"] is None  # shapes-2d are not slices of volumes: cut across the last axis
    with torch.no_grad():
        for z in range(3):
            x = (torch.from_numpy(vol[:, :, z])[None, None] - info["mean"][0]) / info["std"][0]
            assert np.array_equal(mask[:, :, z], model(x).argmax(1)[0].numpy())


def test_3d_train_and_predict_nifti(tmp_path, capsys):
    import nibabel as nib

    out = tmp_path / "run"
    assert main(["train", *TINY[:-1], "segmentation={stem_channels: 4, window: 8}", "--data", "shapes-3d",
                 "--image-size", "12", "--epochs", "1", "--batch-size", "4", "--train-subset", "8",
                 "--eval-subset", "2", "model_kwargs.kernel_sizes=[5,3,3,3]", "--output", str(out)]) == 0
    vol = np.random.default_rng(0).random((14, 11, 9)).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(vol, affine), str(tmp_path / "v.nii.gz"))
    capsys.readouterr()
    assert main(["predict", str(out), str(tmp_path / "v.nii.gz"), "--output", str(tmp_path / "p")]) == 0
    written = nib.load(str(tmp_path / "p" / "v_mask.nii.gz"))
    mask = np.asarray(written.dataobj)
    assert mask.shape == (14, 11, 9) and mask.dtype == np.uint8 and mask.max() < 3
    assert np.allclose(written.affine, affine)
    # the volume is larger than the window (8): sliding windows, same result as the library call
    from largekernel.tasks.segmentation.evaluation import predict_logits

    model = load_segmentation_model(out).model
    info = json.loads((out / "model.json").read_text())["metadata"]["data"]
    x = (torch.from_numpy(vol)[None, None] - info["mean"][0]) / info["std"][0]
    expected = predict_logits(model, x, window=8, overlap=0.25).argmax(1)[0].numpy()
    assert np.array_equal(mask, expected)


def test_resume_ends_with_identical_weights(tmp_path):
    args = ["train", *TINY, "--data", "shapes-2d", "--image-size", "12", "--epochs", "2", "checkpoint_every=1",
            "keep_checkpoints=10", "--no-augment"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([*args, "--output", str(a)]) == 0
    assert main([*args, "--output", str(b)]) == 0
    # cut run b back to its step-1 checkpoint and continue it
    for p in (b / "checkpoints").glob("step_*.pt"):
        if p.name != "step_00000001.pt":
            p.unlink()
    (b / "checkpoints" / "latest").unlink(missing_ok=True)
    for name in ("train_checkpoint.pt", "model.safetensors", "model.json", "metrics.json"):
        (b / name).unlink()
    assert main([*args, "--output", str(b), "--resume"]) == 0
    wa = torch.load(a / "train_checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(b / "train_checkpoint.pt", weights_only=True)["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("extra,needle", [
    (["segmentation={decoder: fpn}"], "segmentation.decoder must be one of"),
    (["segmentation={out_indices: [0, 7]}"], "out_indices [0, 7] out of range"),
    (["segmentation={windw: 8}"], "unknown option segmentation.windw"),
    (["--data", "digits"], "unknown segmentation data set 'digits'"),
    (["--mixup", "0.2"], "set mixup=0 and cutmix=0 for task=segment"),
])
def test_bad_options_are_one_line_errors(extra, needle, tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    argv = ["train", *TINY, "--data", "shapes-2d", "--image-size", "12", "--epochs", "1",
            "--output", str(tmp_path / "x"), *extra]
    assert main(argv) == 2
    assert needle in caplog.text


@pytest.mark.slow
def test_ddp_two_processes(tmp_path, capsys):
    """``torchrun --nproc_per_node=2 ... train --task segment``: one set of artefacts, exact metrics."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    argv = [a for a in TINY if a != "--quiet"] + ["--data", "shapes-2d", "--image-size", "12", "--epochs", "2",
                                                  "--eval-subset", "7", "--output", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
         "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "largekernel.cli", "train", *argv],
        env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["world_size"] == 2
    assert summary["final"]["count"] == 7  # odd: ranks evaluate 4 and 3 images, none repeated
    capsys.readouterr()
    assert main(["evaluate", str(out / "model.safetensors"), "--limit", "7", "--json",
                 "--output", str(tmp_path / "e")]) == 0
    again = json.loads(capsys.readouterr().out)
    # BN statistics were averaged over ranks before the final evaluation; the summed counts equal
    # a single-process evaluation of the saved weights
    assert again["confusion_matrix"] == summary["final"]["confusion_matrix"]
