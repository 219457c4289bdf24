"""The Pathfinder experiment configs: loadable, and differing only in kernel size."""

from __future__ import annotations

from importlib import resources

import yaml

CONFIGS = resources.files("largekernel") / "configs"


def _load(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text())


def test_pathfinder_configs_differ_only_in_kernel_size():
    k13, k3 = _load("pathfinder32_k13.yaml"), _load("pathfinder32_k3.yaml")
    assert k13["data"] == k3["data"] and k13["data"].startswith("pathfinder32")  # any level, same data
    ks13 = k13["model_kwargs"].pop("kernel_sizes")
    ks3 = k3["model_kwargs"].pop("kernel_sizes")
    assert k13 == k3  # same model, widths, depths, schedule, seed
    depths = k13["model_kwargs"]["depths"]
    assert [len(s) for s in ks13] == [len(s) for s in ks3] == depths
    assert {k for s in ks13 for k in s} == {13} and {k for s in ks3 for k in s} == {3}


def test_pathfinder_configs_load_and_build():
    from largekernel.models import registry
    from largekernel.train import config
    for name in ("pathfinder32_k13.yaml", "pathfinder32_k3.yaml"):
        cfg = config.load_config(str(CONFIGS / name))
        cfg.validate()
        model = registry.create_model(cfg.model, num_classes=2, in_chans=1, **cfg.model_kwargs)
        assert sum(p.numel() for p in model.parameters()) > 0
