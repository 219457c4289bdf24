"""Model arguments of the analysis tools: names, checkpoints, stages and kernel-size variants."""

from __future__ import annotations

import pytest
import torch

import largekernel
from largekernel.analysis._models import kernel_size_kwargs, resolve_model, stage_index, stage_reduction


def test_kernel_size_kwargs_build_the_same_depth_with_k_everywhere():
    kw = kernel_size_kwargs("unireplknet_a", 31, {"num_classes": 0})
    assert kw["kernel_sizes"] == [[31] * 2, [31] * 2, [31] * 6, [31] * 2] and kw["mixer"] == "dwconv"
    with torch.device("meta"):
        model = largekernel.create_model("unireplknet_a", **kw)
    sizes = {m.kernel_size for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1}
    assert sizes == {(31, 31)}
    assert kernel_size_kwargs("unireplknet_a", 3)["mixer"] is None
    assert kernel_size_kwargs("replknet_31b", 13) == {"large_kernel_sizes": [13] * 4}
    with pytest.raises(ValueError, match="kernel size"):
        kernel_size_kwargs("convnext_atto", 4)
    with pytest.raises(ValueError, match="lsnet_t"):
        kernel_size_kwargs("lsnet_t", 7)


def test_resolve_model_errors_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="MODEL 'unireplknet_q' .* did you mean"):
        resolve_model("unireplknet_q", arg="MODEL")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="MODEL .* is not a model checkpoint"):
        resolve_model(junk, arg="MODEL")
    with pytest.raises(TypeError, match="model"):
        resolve_model(3)


def test_stage_helpers():
    model = largekernel.create_model("convnext_atto", num_classes=0, depths=(1, 1, 1, 1), dims=(8, 8, 8, 8))
    assert [stage_reduction(model, i) for i in range(4)] == [4, 8, 16, 32]
    assert stage_index(model, -1) == 3
    with pytest.raises(ValueError, match="--stage must be an int in \\[-4, 3\\]"):
        stage_index(model, 7, arg="--stage")
    with pytest.raises(ValueError, match="no stages"):
        stage_index(torch.nn.Conv2d(1, 1, 3), 0)
