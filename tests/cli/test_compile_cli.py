"""`largekernel train --compile` and `largekernel evaluate --compile` (issue 17).

The compiled runs use dynamo with a counting "eager" backend (patched in for ``torch.compile``), so
the test checks what largekernel does around the compiler -- the model really goes through
``torch.compile``, the engine stays inside, checkpoints keep the eager module's keys, resumption
works -- without spending minutes in inductor's C++ build. The inductor variant of a compiled
training step is in ``tests/ops/test_custom_op.py`` (slow).
"""

from __future__ import annotations

import functools
import json
import os
import signal

import pytest
import torch

from largekernel.cli import main
from largekernel.ops import custom_op
from largekernel.train import checkpointing as ckpt
from largekernel.train import testing_hooks

# a tiny ConvNeXt with 13x13 depthwise kernels (engine convolutions) on 32-px digits
_MODEL = ["--model", "convnext_atto", "--model-kwargs",
          json.dumps({"depths": [1, 1, 1, 1], "dims": [8, 16, 16, 16], "kernel_sizes": 13})]
_COMMON = [*_MODEL, "--data", "digits", "--image-size", "32", "--batch-size", "32", "--train-subset", "64",
           "--eval-subset", "64", "--threads", "1", "--quiet", "--no-plots", "warmup_steps=1"]


class _Graphs(list):
    """The graphs dynamo handed to the backend; ``runs`` counts their executions."""

    runs: list[int]


@pytest.fixture
def compiled_graphs(monkeypatch):
    """Route every torch.compile through dynamo with an eager backend that records its graphs."""
    graphs = _Graphs()
    runs: list[int] = []
    graphs.runs = runs

    def backend(gm, example_inputs):
        graphs.append(gm)

        def run(*args):
            runs.append(len(graphs))  # one entry per execution of a compiled graph
            return gm.forward(*args)

        return run

    real = torch.compile

    @functools.wraps(real)
    def compile_eagerly(model=None, **kwargs):
        kwargs["backend"] = backend
        return real(model, **kwargs)

    monkeypatch.setattr(torch, "compile", compile_eagerly)
    torch._dynamo.reset()
    before = custom_op.compile_engine_enabled()
    yield graphs
    torch._dynamo.reset()
    custom_op.set_compile_engine(before)


def _weights(run) -> dict[str, torch.Tensor]:
    return ckpt.load_training_checkpoint(ckpt.latest_checkpoint(run))["model"]


def _engine_nodes(graphs) -> list[str]:
    return [str(n.target) for g in graphs for n in g.graph.nodes
            if n.op == "call_function" and "largekernel" in str(n.target)]


def test_train_compile_matches_eager_keeps_keys_and_resumes(tmp_path, compiled_graphs, monkeypatch):
    assert main(["train", *_COMMON, "--epochs", "2", "--output", str(tmp_path / "eager")]) == 0
    assert not compiled_graphs  # without --compile nothing is compiled
    # the compiled run is interrupted (SIGINT, handled after the step-1 checkpoint), then resumed
    def interrupt_after_step_1(step):
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(testing_hooks, "after_checkpoint", interrupt_after_step_1)
    assert main(["train", *_COMMON, "--epochs", "2", "--compile", "--checkpoint-every", "1",
                 "--output", str(tmp_path / "comp")]) == 128 + signal.SIGINT
    monkeypatch.setattr(testing_hooks, "after_checkpoint", lambda step: None)
    assert compiled_graphs, "--compile did not go through torch.compile"
    # with the engine on, its convolutions are inside the compiled graph as opaque custom ops
    assert any("largekernel.conv" in n for n in _engine_nodes(compiled_graphs)), _engine_nodes(compiled_graphs)
    assert not custom_op.compile_engine_enabled()  # the process-wide switch was restored
    assert _weights(tmp_path / "comp") and ckpt.load_training_checkpoint(
        ckpt.latest_checkpoint(tmp_path / "comp"))["progress"]["step"] == 1
    runs_before = len(compiled_graphs.runs)
    # resume the compiled run (the stored config has compile=true: it runs compiled again; dynamo
    # may reuse the graph it traced for the first run, so count executions, not graphs)
    assert main(["train", "--output", str(tmp_path / "comp"), "--resume"]) == 0
    assert len(compiled_graphs.runs) - runs_before == 3  # steps 2, 3 and 4
    eager, comp = _weights(tmp_path / "eager"), _weights(tmp_path / "comp")
    assert list(comp) == list(eager) and not any("_orig_mod" in k for k in comp)
    for k, v in eager.items():  # same data order, same steps: the same weights up to rounding
        assert torch.allclose(comp[k], v, atol=1e-5, rtol=1e-4), k
    stored = json.loads((tmp_path / "comp" / "metrics.json").read_text())
    assert stored["config"]["compile"] is True and stored["steps"] == 4
    # the deploy checkpoint of the compiled run loads like any other (no prefixes)
    out = tmp_path / "eval"
    runs_before = len(compiled_graphs.runs)
    evaluate = ["evaluate", str(tmp_path / "comp"), "--limit", "64", "--batch-size", "32", "--json"]
    assert main([*evaluate, "--compile", "--output", str(out)]) == 0
    assert len(compiled_graphs.runs) - runs_before == 2  # two batches of 32, both compiled
    compiled_top1 = json.loads((out / "eval.json").read_text())["top1"]
    assert main([*evaluate, "--output", str(tmp_path / "eval2")]) == 0
    assert compiled_top1 == json.loads((tmp_path / "eval2" / "eval.json").read_text())["top1"]


@pytest.mark.slow
def test_compile_without_engine_compiles_torch_convolutions(tmp_path, compiled_graphs):
    assert main(["train", *_COMMON, "--max-steps", "1", "--compile", "--no-accelerate",
                 "--output", str(tmp_path / "plain")]) == 0
    assert compiled_graphs and not _engine_nodes(compiled_graphs)


@pytest.mark.parametrize("value", ["maybe", "2"])
def test_compile_key_is_validated(value, tmp_path, caplog):
    assert main(["train", f"compile={value}", "--output", str(tmp_path / "x")]) == 2
    assert "compile must be true or false" in caplog.text
