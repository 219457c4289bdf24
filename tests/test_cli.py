"""End-to-end command line: train (tiny) -> evaluate -> predict -> reparameterize -> info, and
one-line errors (exit code 2) for bad input."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from largekernel.cli import main

TINY = ["--epochs", "1", "--train-subset", "64", "--eval-subset", "32", "--batch-size", "32",
        "--quiet", "--threads", "1", "model_kwargs.dims=[8,16,32,64]"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    threads = torch.get_num_threads()
    try:
        assert main(["train", "--output", str(out), *TINY]) == 0
    finally:
        torch.set_num_threads(threads)  # --threads is process-wide; don't leak it into other tests
    return out


def test_train_artefacts(run_dir):
    for name in ("train_checkpoint.pt", "model.safetensors", "model.json", "metrics.json",
                 "metrics.jsonl", "curves.png", "confusion_matrix.png", "config.yaml"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["final"]["count"] == 32
    assert metrics["data"]["spec"] == "digits" and metrics["data"]["image_size"] == 32
    assert metrics["model"]["kwargs"]["dims"] == [8, 16, 32, 64]
    doc = json.loads((run_dir / "model.json").read_text())
    assert doc["form"] == "deploy" and doc["metadata"]["data"]["num_classes"] == 10
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"epoch", "final"} <= {rec["kind"] for rec in lines}


def test_evaluate_train_and_deploy_checkpoints_agree(run_dir, capsys):
    results = {}
    for name in ("train_checkpoint.pt", "model.safetensors"):
        out = run_dir / f"eval-{name}"
        assert main(["evaluate", str(run_dir / name), "--limit", "40", "--json", "--output", str(out)]) == 0
        results[name] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert (out / "confusion_matrix.png").is_file() and (out / "eval.json").is_file()
    a, b = results["train_checkpoint.pt"], results["model.safetensors"]
    assert a["kind"] == "train" and b["kind"] == "deploy"
    assert a["count"] == b["count"] == 40
    # the reparameterised deploy model is the same function: same predictions
    assert a["confusion_matrix"] == b["confusion_matrix"]
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    assert sum(map(sum, a["confusion_matrix"])) == 40
    # a run directory resolves to its deploy checkpoint
    assert main(["evaluate", str(run_dir), "--limit", "8", "--output", str(run_dir / "e"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip())["kind"] == "deploy"


def test_predict_png_matches_direct_inference(run_dir, tmp_path, capsys):
    from PIL import Image

    from largekernel.data import build_dataset
    from largekernel.train.loading import load_trained_model

    ds = build_dataset("digits", "test", image_size=32)
    paths = []
    for i in range(3):
        raw, _ = ds.raw(i)  # [0, 1], 1 x 32 x 32
        path = tmp_path / f"digit{i}.png"
        Image.fromarray((raw[0].numpy() * 255).round().astype(np.uint8), mode="L").save(path)
        paths.append(path)
    assert main(["predict", str(run_dir), *map(str, paths), "--json", "--top-k", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    model = load_trained_model(run_dir).model
    with torch.no_grad():
        expected = torch.softmax(model(torch.stack([ds[i][0] for i in range(3)])), dim=-1)
    for row, exp in zip(rows, expected):
        probs = torch.tensor(row["probabilities"])
        assert probs.sum().item() == pytest.approx(1.0, abs=1e-5)
        torch.testing.assert_close(probs, exp, atol=2e-2, rtol=0)  # 8-bit PNG quantisation
        assert len(row["top"]) == 2 and row["top"][0]["probability"] >= row["top"][1]["probability"]


def test_reparameterize_and_info(run_dir, tmp_path, capsys):
    out = tmp_path / "deploy.safetensors"
    assert main(["reparameterize", str(run_dir / "train_checkpoint.pt"), str(out), "--check"]) == 0
    text = capsys.readouterr().out
    diff = float(text.split("difference train vs deploy:")[1].split()[0])
    assert diff < 1e-4
    assert out.is_file() and out.with_suffix(".json").is_file()
    # recompute what --check claims: the written deploy file against the training checkpoint
    from largekernel.train.loading import load_trained_model

    deploy = load_trained_model(out).model
    trained = load_trained_model(run_dir / "train_checkpoint.pt").model
    x = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = trained(x)
        err = ((deploy(x) - ref).abs().max() / ref.abs().max()).item()
    assert err < 1e-4
    assert main(["info", str(out), "--json"]) == 0
    deploy_info = json.loads(capsys.readouterr().out)
    assert main(["info", str(run_dir / "train_checkpoint.pt"), "--json"]) == 0
    train_info = json.loads(capsys.readouterr().out)
    assert deploy_info["form"] == "deploy" and train_info["form"] == "train"
    assert deploy_info["params"] < train_info["params"]
    assert deploy_info["input"] == [1, 1, 32, 32]
    assert "depthwise 13x13" in deploy_info["conv_kernels"]
    assert main(["info", "unireplknet_a", "--image-size", "32", "--model-kwargs",
                 '{"num_classes": 10, "dims": [8, 16, 32, 64]}']) == 0
    assert "params" in capsys.readouterr().out


@pytest.mark.parametrize("name, published_gmacs", [("unireplknet_a", 0.64)])
def test_info_macs_match_count_macs_and_published(name, published_gmacs, capsys):
    import largekernel
    from largekernel.models.counting import count_macs, count_params

    for deploy in (False, True):
        argv = ["info", name, "--json"] + (["--model-kwargs", '{"deploy": true}'] if deploy else [])
        assert main(argv) == 0
        info = json.loads(capsys.readouterr().out)
        with torch.device("meta"):
            model = largekernel.create_model(name, deploy=deploy)
        assert info["input"] == [1, 3, 224, 224] and info["form"] == ("deploy" if deploy else "train")
        assert info["macs"] == count_macs(model, (1, 3, 224, 224))
        assert info["params"] == count_params(model)
    # the deploy form at 224 px with 1000 classes is how the figures are published
    assert abs(info["macs"] / 1e9 - published_gmacs) < 0.01


@pytest.mark.parametrize("argv, needle", [
    (["evaluate", "/nonexistent/ckpt.pt"], "not found"),
    (["predict", "/nonexistent/run", "x.png"], "not found"),
    (["info", "unireplknet_zz"], "unknown model name"),
    (["train", "epochz=3"], "unknown config option"),
    (["train", "--model", "not_a_model", "--quiet"], "unknown model name"),
    (["train", "--data", "not_a_dataset", "--quiet", "--epochs", "1"], "not_a_dataset"),
    (["train", "--config", "/nonexistent.yaml"], "config file not found"),
    (["train", "--model-kwargs", "[1,2]"], "JSON object"),
])
def test_errors_are_one_line_exit_2(argv, needle, caplog, tmp_path):
    caplog.set_level(logging.ERROR, logger="largekernel")
    if argv[0] == "train":
        argv = [*argv, "--output", str(tmp_path / "r")]
    assert main(argv) == 2
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(needle in m for m in messages), messages


def test_corrupt_checkpoints_are_rejected(tmp_path, caplog, run_dir):
    caplog.set_level(logging.ERROR, logger="largekernel")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    assert main(["evaluate", str(bad)]) == 2
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"garbage")
    assert main(["info", str(bad_st)]) == 2
    img = tmp_path / "notimage.png"
    img.write_text("hello")
    assert main(["predict", str(run_dir), str(img)]) == 2
    assert any("cannot read image" in r.getMessage() for r in caplog.records)


def test_resume_flag_without_checkpoint_errors(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="largekernel")
    assert main(["train", "--output", str(tmp_path / "empty"), "--resume"]) == 2
    assert any("no checkpoint" in r.getMessage() for r in caplog.records)


def test_overrides_may_follow_flags_in_order():
    from largekernel.cli import build_parser, parse_args
    from largekernel.cli.train import build_config

    parser = build_parser()
    args = parse_args(parser, ["train", "epochs=3", "--quiet", "epochs=4", "--seed", "7", "lr=0.5"])
    assert args.overrides == ["epochs=3", "epochs=4", "lr=0.5"]
    cfg = build_config(args)
    assert (cfg.epochs, cfg.seed, cfg.lr, cfg.quiet) == (4, 7, 0.5, True)  # last override wins


@pytest.mark.parametrize("argv", [["train", "--bogus"], ["train", "a=1", "--quiet", "stray"],
                                  ["info", "unireplknet_a", "x=1"]])
def test_unknown_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err
