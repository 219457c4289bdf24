"""The hub-style local directory (config.json + model.safetensors) and create_model("local-dir:...")."""

from __future__ import annotations

import json

import pytest
import torch
from deploy_helpers import example_input, small_model
from safetensors.torch import load_file

import largekernel
from largekernel.deploy import load_local_dir, save_local_dir


@pytest.mark.parametrize("name", ["unireplknet_a", "sgconv_seq_tiny", pytest.param("lsnet_t", marks=pytest.mark.slow)])
@pytest.mark.parametrize("deploy", [False, True])
def test_round_trip(name, deploy, tmp_path):
    model = small_model(name)
    if deploy:
        model = largekernel.reparameterize(model)
    save_local_dir(model, tmp_path / "saved", pretrained_cfg={"input_size": [3, 32, 32]})
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["config.json", "model.safetensors"]
    doc = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert doc["architecture"] == name and doc["num_classes"] == 5
    assert doc["largekernel"]["form"] == ("deploy" if deploy else "train")
    # the weights file is plain safetensors holding exactly the state dict
    stored = load_file(str(tmp_path / "saved" / "model.safetensors"))
    assert stored.keys() == model.state_dict().keys()
    loaded = largekernel.create_model(f"local-dir:{tmp_path / 'saved'}")
    assert type(loaded) is type(model)
    assert loaded.pretrained_cfg == {"input_size": [3, 32, 32]}
    assert loaded.training is not deploy  # deploy form comes back ready for inference
    x = example_input(name)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model(x))


def test_overrides_and_errors(tmp_path):
    model = small_model("convnext_atto")
    save_local_dir(model, tmp_path / "m")
    feats = load_local_dir(tmp_path / "m", features_only=True)
    assert isinstance(feats(torch.randn(1, 3, 32, 32)), (list, tuple))
    with pytest.raises(ValueError, match="do(es)? not fit|size mismatch|checkpoint"):
        load_local_dir(tmp_path / "m", num_classes=7)
    with pytest.raises(FileNotFoundError, match="not found"):
        largekernel.create_model(f"local-dir:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_local_dir(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="invalid"):
        load_local_dir(tmp_path / "bad")
    with pytest.raises(ValueError, match="create_model"):
        save_local_dir(torch.nn.Linear(2, 2), tmp_path / "lin")
    assert not (tmp_path / "lin").exists()
