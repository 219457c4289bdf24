"""Every subcommand's argument checks: a bad value exits with code 2 and ONE log line naming it.

These run the CLI in-process (``largekernel.cli.main``) and stop at argument validation, before any
model is trained or data set read, so the whole file takes a few seconds. The needle of each case is
the argument (or the fact) the message must name; the checks also make sure the error is reported
without a traceback (the record carries no exception info unless ``-v`` is given).
"""

from __future__ import annotations

import logging

import pytest

import largekernel.cli.info
from largekernel.cli import main

EXPERIMENT = ["experiment", "kernel-size"]

CASES = [
    # experiment kernel-size: validated before any data set is built or anything trained
    ([*EXPERIMENT, "--kernel-sizes", "3,x"], "--kernel-sizes must be a comma list of ints"),
    ([*EXPERIMENT, "--kernel-sizes", "3,4"], "--kernel-sizes must be odd ints >= 3"),
    ([*EXPERIMENT, "--kernel-sizes", "1"], "--kernel-sizes must be odd ints >= 3"),
    ([*EXPERIMENT, "--data", " , "], "--data must name at least one data set"),
    ([*EXPERIMENT, "--erf-images", "0"], "--erf-images must be positive"),
    ([*EXPERIMENT, "--threshold", "0.4"], "--threshold must be one of"),
    ([*EXPERIMENT, "--force", "--cached-only"], "--force and --cached-only exclude each other"),
    ([*EXPERIMENT, "--data", "no_such_data_set"], "--data:"),
    # profile
    (["profile", "unireplknet_a", "--repeats", "0"], "--repeats must be >= 1"),
    (["profile", "unireplknet_a", "--warmup", "-1"], "--warmup must be >= 0"),
    (["profile", "unireplknet_a", "--top", "0"], "--top must be >= 1"),
    (["profile", "unireplknet_a", "--threads", "0"], "--threads must be positive"),
    # the image is smaller than the model's total stride (32): named with the stride to use
    (["profile", "unireplknet_a", "--input", "1x3x16x16", "--repeats", "1", "--warmup", "0"],
     "smaller than unireplknet_a's total stride 32"),
    # export
    (["export", "unireplknet_a", "-o", "{tmp}/m.onnx", "--calibration-size", "0"],
     "--calibration-size must be positive"),
    (["export", "unireplknet_a", "-o", "{tmp}/m.pt2", "--format", "torchscript", "--quantize", "int8"],
     "--quantize int8 needs --format onnx"),
    (["export", "unireplknet_a", "-o", "{tmp}/m.onnx", "--format", "tflite"], "--format must be one of"),
    (["export", "unireplknet_a", "-o", "{tmp}/m.onnx", "--input-size", "a,b"],
     "--input-size must be integers"),
    (["export", "unireplknet_a", "-o", "{tmp}/m.onnx", "--input-size", "3,0,64"],
     "--input-size must be positive integers"),
    (["export", "unireplknet_a", "-o", "{tmp}/m.onnx", "--model-kwargs", "{not json"],
     "--model-kwargs must be a JSON object"),
    (["export", "unireplknet_a", "-o", "{tmp}/m.onnx", "--model-kwargs", "[1, 2]"],
     "--model-kwargs must be a JSON object"),
    (["export", "{tmp}/no_such_run", "-o", "{tmp}/m.onnx"],
     "MODEL must be an existing checkpoint/run directory or a registered model name"),
    # erf
    (["erf"], "give a MODEL or CHECKPOINT"),
    (["erf", "unireplknet_a", "--num-images", "0"], "--num-images must be positive"),
    (["erf", "unireplknet_a", "--batch-size", "0"], "--batch-size must be positive"),
    (["erf", "unireplknet_a", "--image-size", "0"], "--image-size must be positive"),
    (["erf", "unireplknet_a", "--kernel-sizes", "3", "--compare", "convnext_atto"],
     "--kernel-sizes needs one MODEL name"),
    (["erf", "unireplknet_a", "--kernel-sizes", "3,x"], "--kernel-sizes must be a comma list of odd ints"),
    # kernels
    (["kernels", "unireplknet_a", "--min-kernel", "0"], "--min-kernel must be positive"),
    (["kernels", "unireplknet_a", "--max-filters", "0"], "--max-filters must be positive"),
    (["kernels", "unireplknet_a", "--zero-tol", "1.5"], "--zero-tol must be in [0, 1]"),
    (["kernels", "unireplknet_a", "--dup-tol", "-0.1"], "--dup-tol must be in [0, 1]"),
    # pretrain: before the data set is built
    (["pretrain", "--model-kwargs", "{oops"], "--model-kwargs must be a JSON object"),
    (["pretrain", "--model-kwargs", "[16, 32]"], "--model-kwargs must be a JSON object"),
    (["pretrain", "--output", "{tmp}/empty_run", "--resume"], "--resume: no checkpoint found"),
    # info
    (["info"], "give a checkpoint path or a model name"),
    (["info", "unireplknet_a", "--model-kwargs", "{oops"], "--model-kwargs must be a JSON object"),
]


@pytest.mark.parametrize("argv, needle", CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_argument_exits_2_with_one_line(argv, needle, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="largekernel")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert needle in message, message
    assert "\n" not in message and errors[0].exc_info is None  # one line, no traceback
    assert not list(tmp_path.iterdir()) or argv[0] == "pretrain"  # nothing written before the check


def test_verbose_error_keeps_the_traceback(caplog):
    caplog.set_level(logging.INFO, logger="largekernel")
    assert main(["-v", "info"]) == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "give a checkpoint path" in str(errors[0].exc_info[1])


def test_no_subcommand_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: largekernel") and "train" in out and "export" in out


def test_experiment_without_experiment_name_prints_help_and_exits_2(capsys):
    assert main(["experiment"]) == 2
    assert "kernel-size" in capsys.readouterr().err


def test_ctrl_c_exits_130_with_one_line(monkeypatch, caplog):
    def interrupted(args):
        raise KeyboardInterrupt

    # build_parser() reads the module's run() when it registers the subcommand
    monkeypatch.setattr(largekernel.cli.info, "run", interrupted)
    caplog.set_level(logging.INFO, logger="largekernel")
    assert main(["info", "unireplknet_a"]) == 130
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == ["interrupted"]
