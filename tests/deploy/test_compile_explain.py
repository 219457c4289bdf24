"""torch.compile over every registered model family, training and deploy form: no graph breaks in
largekernel's own code (``torch._dynamo.explain``), with the compile engine off (default: the
engine steps aside) and on (``accelerate(compile=True)``: the engine as an opaque custom op).

Dynamo only traces here (no backend compiles anything). The default suite runs the two sequence
families (about a second each); every family is in ``pytest -m slow`` (about 10 s per family and
engine mode on an idle machine).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_helpers import SMALL, example_input, small_model

import largekernel
from largekernel.models.registry import list_models, model_entrypoint
from largekernel.ops import custom_op

_SOURCE = Path(largekernel.__file__).resolve().parent
_CHEAP = {"sgconv_seq_tiny", "longconv_seq_tiny"}
# small configurations with a convolution the engine takes (LSNet's and the sequence models' are
# left to PyTorch at these sizes, so no custom op appears in their graphs)
_ENGINE_KERNELS = {"convnext_atto", "inception_next_atto", "unireplknet_a", "replknet_31b"}


def test_every_registered_family_is_checked():
    """A new family must add a small configuration to deploy_helpers.SMALL (and so to this test)."""
    families = {model_entrypoint(n).__module__ for n in list_models()}
    checked = {model_entrypoint(n).__module__ for n in SMALL}
    assert families == checked, sorted(families - checked)


def _largekernel_frames(reason) -> list[str]:
    return [f"{f.filename}:{f.lineno}" for f in reason.user_stack
            if Path(f.filename).resolve().is_relative_to(_SOURCE)]


@pytest.mark.parametrize("engine", [False, True], ids=["engine-off", "engine-on"])
@pytest.mark.parametrize("name", [n if n in _CHEAP else pytest.param(n, marks=pytest.mark.slow) for n in SMALL])
def test_no_graph_break_in_largekernel_code(name, engine):
    import torch._dynamo

    model = small_model(name)
    x = example_input(name, batch=2, size=32)
    before = custom_op.compile_engine_enabled()
    custom_op.set_compile_engine(engine)
    try:
        forms = {"train": largekernel.accelerate(model.train()),
                 "deploy": largekernel.reparameterize(model).eval()}
        for form, net in forms.items():
            torch._dynamo.reset()
            explanation = torch._dynamo.explain(net)(x)
            assert explanation.graph_count >= 1, (form, "nothing was traced")
            ours = {str(r.reason): _largekernel_frames(r) for r in explanation.break_reasons}
            assert not any(ours.values()), (form, ours)
            # today there is no break at all (torch's own code included): keep it that way
            assert explanation.graph_break_count == 0, (form, [str(r.reason) for r in explanation.break_reasons])
            if engine and form == "train" and name in _ENGINE_KERNELS:
                nodes = [str(n.target) for g in explanation.graphs for n in g.graph.nodes if n.op == "call_function"]
                assert any("largekernel" in n for n in nodes), "the engine's custom op is not in the graph"
    finally:
        torch._dynamo.reset()
        custom_op.set_compile_engine(before)


def test_break_frames_are_attributed_to_largekernel():
    """The frame check above is real: a break inside largekernel's code is reported as ours."""
    import torch._dynamo

    from largekernel.utils import output  # any largekernel module: its frames count as ours

    def breaks(x):
        x = x + 1
        torch._dynamo.graph_break()
        return x * 2

    fake = type(breaks)(breaks.__code__.replace(co_filename=output.__file__), globals(), "breaks", None,
                        breaks.__closure__)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(fake)(torch.randn(3))
    assert explanation.graph_break_count == 1
    assert _largekernel_frames(explanation.break_reasons[0])
