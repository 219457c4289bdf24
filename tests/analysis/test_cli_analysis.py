"""The erf / kernels / profile / experiment commands: files written, help with examples, exit code 2 on bad input."""

from __future__ import annotations

import json

import pytest
import torch

import largekernel
from largekernel.cli import main

TINY = {"num_classes": 10, "depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32], "kernel_sizes": [[3], [13], [7], [3]]}


@pytest.fixture
def checkpoints(tmp_path):
    torch.manual_seed(0)
    model = largekernel.create_model("unireplknet_a", **TINY)
    train_path = largekernel.save_checkpoint(model, tmp_path / "train.safetensors")
    deploy_path = largekernel.save_checkpoint(largekernel.reparameterize(model.eval()), tmp_path / "deploy.safetensors")
    return train_path, deploy_path


@pytest.mark.parametrize("command", [["erf"], ["kernels"], ["profile"], ["experiment", "kernel-size"]])
def test_help_has_an_example(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    assert "example" in capsys.readouterr().out


def test_erf_command_writes_png_and_json(tmp_path, checkpoints, capsys):
    train_path, deploy_path = checkpoints
    out = tmp_path / "erf"
    code = main(["erf", str(train_path), "--compare", str(deploy_path), "--num-images", "3", "--image-size", "48",
                 "-o", str(out)])
    assert code == 0
    doc = json.loads((tmp_path / "erf.json").read_text())
    assert len(doc["models"]) == 2
    a, b = (m["area_ratios"] for m in doc["models"])
    # the deploy form is the same function: the same ERF (up to float round-off)
    assert a["0.5"]["side"] == b["0.5"]["side"]
    assert (tmp_path / "erf.png").read_bytes()[:4] == b"\x89PNG"
    code = main(["erf", "convnext_atto", "--kernel-sizes", "3,7", "--model-kwargs",
                 '{"num_classes": 0, "depths": [1, 1, 1, 1], "dims": [8, 8, 8, 8], "ls_init_value": 1}',
                 "--num-images", "2", "--image-size", "64", "-o", str(tmp_path / "ks")])
    assert code == 0
    assert [m["label"] for m in json.loads((tmp_path / "ks.json").read_text())["models"]] == \
        ["convnext_atto K=3", "convnext_atto K=7"]


def test_bad_input_exits_2_naming_the_argument(tmp_path, checkpoints, caplog):
    train_path, _ = checkpoints
    junk = tmp_path / "junk.pt"
    torch.save({"weights": torch.zeros(3)}, junk)
    cases = [
        (["erf", str(junk), "-o", str(tmp_path / "x")], "MODEL"),
        (["erf", str(train_path), "--stage", "4", "-o", str(tmp_path / "x")], "--stage"),
        (["erf", str(train_path), "--image-size", "16", "--stage", "3", "-o", str(tmp_path / "x")], "--image-size"),
        (["erf", "unireplknet_a", "--data", "digits", "--image-size", "32", "-o", str(tmp_path / "x")], "--data"),
        (["kernels", str(junk), "-o", str(tmp_path / "x")], "MODEL"),
        (["kernels", str(train_path), "--layers", "nope", "-o", str(tmp_path / "x")], "--layers"),
        (["profile", str(junk), "-o", str(tmp_path / "x")], "MODEL"),
        (["profile", "unireplknet_a", "--input", "1x3x", "-o", str(tmp_path / "x")], "--input"),
        (["profile", "no_such_model", "-o", str(tmp_path / "x")], "MODEL"),
        (["profile", "unireplknet_a", "--input", "1x3x16x16", "-o", str(tmp_path / "x")], "--input"),
        (["experiment", "kernel-size", "--kernel-sizes", "4", "--output", str(tmp_path / "x")], "--kernel-sizes"),
        (["experiment", "kernel-size", "--data", "nope", "--output", str(tmp_path / "x")], "--data"),
        (["experiment", "kernel-size", "--threshold", "0.4", "--output", str(tmp_path / "x")], "--threshold"),
        (["experiment", "kernel-size", "--force", "--cached-only", "--output", str(tmp_path / "x")], "--cached-only"),
    ]
    for argv, name in cases:
        caplog.clear()
        assert main(argv) == 2, argv
        assert name in caplog.text, (argv, caplog.text)
        assert "Traceback" not in caplog.text
        assert len(caplog.text) < 600, caplog.text  # one readable line, not a page of torch's text


def test_kernels_command_compares_train_and_deploy(tmp_path, checkpoints, capsys):
    train_path, deploy_path = checkpoints
    out = tmp_path / "k"
    assert main(["kernels", str(train_path), "--compare", str(deploy_path), "--max-filters", "4", "-o", str(out)]) == 0
    doc = json.loads((tmp_path / "k.json").read_text())
    assert doc["layers"] and "compare" in doc
    for name in ("k.png", "k_energy.png", "k_compare.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert "compared with" in capsys.readouterr().out


def test_profile_command(tmp_path, checkpoints, capsys):
    train_path, _ = checkpoints
    out = tmp_path / "p"
    assert main(["profile", str(train_path), "--input", "1x3x32x32", "--repeats", "1", "--warmup", "0",
                 "--deploy", "-o", str(out)]) == 0
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["form"] == "deploy" and doc["total_macs"] == largekernel.count_macs(
        largekernel.reparameterize(largekernel.create_model_from(train_path).eval()), (1, 3, 32, 32))
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert "efficiency gap" in capsys.readouterr().out


def test_commands_show_progress_bars(tmp_path, checkpoints, capsys):
    # kernels: a bar over the layers; erf: one over the models when there are several, and one
    # over the batches of each ERF when there is more than one batch
    train_path, deploy_path = checkpoints
    assert main(["kernels", str(train_path), "--max-filters", "2", "-o", str(tmp_path / "k")]) == 0
    assert "kernel stats" in capsys.readouterr().err
    assert main(["erf", str(train_path), "--compare", str(deploy_path), "--num-images", "3", "--batch-size", "2",
                 "--image-size", "32", "-o", str(tmp_path / "e")]) == 0
    err = capsys.readouterr().err
    assert "models" in err and "ERF" in err
