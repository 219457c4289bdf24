"""`largekernel bench train` with 1-D and 3-D UniRepLKNets (spatial_dims in --model-kwargs)."""

from __future__ import annotations

import json

import pytest

from largekernel.cli import main


@pytest.mark.parametrize("dims_,size", [(1, 64), (3, 8)])
def test_bench_train_nd_rows(tmp_path, dims_, size):
    kwargs = {"spatial_dims": dims_, "dims": [8, 16, 24, 32], "depths": [1, 1, 1, 1],
              "kernel_sizes": [[7], [7], [3], [3]]}
    js = tmp_path / "train.json"
    args = ["bench", "train", "--quick", "--image-size", str(size), "--batch-size", "2", "--repeats", "1",
            "--warmup", "0", "--threads", "1", "--model-kwargs", json.dumps(kwargs), "--json", str(js)]
    assert main(args) == 0
    payload = json.loads(js.read_text())
    assert payload["settings"]["model_kwargs"]["spatial_dims"] == dims_
    assert {r["mode"] for r in payload["results"]} == {"torch", "engine"}
