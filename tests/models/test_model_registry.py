"""Model registry behaviour, independent of any particular model family."""

from __future__ import annotations

import pytest
from torch import nn

from largekernel.models import registry


@pytest.fixture
def toy_model_name():
    def toy_registry_net(num_classes: int = 10, in_chans: int = 3):
        return nn.Linear(in_chans, num_classes)

    registry.register_model(toy_registry_net)
    yield "toy_registry_net"
    registry._ENTRYPOINTS.pop("toy_registry_net", None)


def test_create_and_list(toy_model_name):
    model = registry.create_model(toy_model_name, num_classes=4, in_chans=2)
    assert model.out_features == 4 and model.in_features == 2
    assert model.largekernel_config == {"name": toy_model_name, "kwargs": {"num_classes": 4, "in_chans": 2}}
    assert toy_model_name in registry.list_models("toy_*")
    assert registry.is_model(toy_model_name)


def test_unknown_kwarg_raises_naming_it(toy_model_name):
    with pytest.raises(TypeError, match="num_clases"):
        registry.create_model(toy_model_name, num_clases=4)


def test_unknown_model_suggests_close_names(toy_model_name):
    with pytest.raises(ValueError, match="toy_registry_net"):
        registry.create_model("toy_registry_nett")


def test_duplicate_registration_of_other_function_raises(toy_model_name):
    def toy_registry_net():  # same name, different function
        return nn.Identity()

    toy_registry_net.__qualname__ = "elsewhere.toy_registry_net"
    with pytest.raises(ValueError, match="already registered"):
        registry.register_model(toy_registry_net)
