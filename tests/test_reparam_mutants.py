"""largekernel.reparameterize: the protocol in detail (which method, order, guards, engine follow-up).

Foreign modules stand in for third-party operators: they record what was called, in which order
and in which mode, so the tests check the traversal itself, not just a final output.
"""

from __future__ import annotations

import pytest
from torch import nn

import largekernel
from largekernel.nn.conv import Conv2d as EngineConv2d


class _Recorder(nn.Module):
    """Has ``reparameterize()``; logs (name, training) when called; may hold children."""

    def __init__(self, name, log, *children):
        super().__init__()
        self.name, self.log = name, log
        self.kids = nn.ModuleList(children)

    def forward(self, x):
        return x

    def reparameterize(self):
        self.log.append((self.name, self.training))


class _RecorderWithFuse(_Recorder):
    def fuse(self):  # must never be called: reparameterize() takes precedence
        self.log.append((self.name + ".fuse", self.training))
        return nn.Identity()


class _InPlaceFuse(nn.Module):
    """A ``fuse()`` that works in place and returns nothing (the module stays)."""

    def __init__(self, returned=None):
        super().__init__()
        self.fused = False
        self.returned = returned

    def forward(self, x):
        return x

    def fuse(self):
        self.fused = True
        return self.returned


class _SelfCalling(nn.Module):
    """A module whose own method calls ``largekernel.reparameterize`` on itself."""

    def __init__(self, log):
        super().__init__()
        self.log = log
        self.child = _Recorder("child", log)

    def forward(self, x):
        return x

    def reparameterize(self):
        self.log.append(("self", self.training))
        largekernel.reparameterize(self, inplace=True)


class _FuseToTree(nn.Module):
    """``fuse()`` returns a new module whose children still need reparameterising."""

    def __init__(self, log):
        super().__init__()
        self.log = log

    def forward(self, x):
        return x

    def fuse(self):
        return nn.Sequential(_Recorder("new-child", self.log))


def test_parents_first_then_children_and_eval_mode():
    log = []
    model = _Recorder("root", log, _Recorder("a", log, _Recorder("a1", log)), _Recorder("b", log))
    model.train()
    out = largekernel.reparameterize(model, inplace=True)
    assert out is model
    # every method sees eval mode (BN folding uses running statistics)
    assert log == [("root", False), ("a", False), ("a1", False), ("b", False)]
    assert not any(m.training for m in model.modules())


def test_reparameterize_takes_precedence_over_fuse():
    log = []
    model = nn.Sequential(_RecorderWithFuse("x", log))
    out = largekernel.reparameterize(model, inplace=True)  # (a copy would log into a copied list)
    assert log == [("x", False)]
    assert isinstance(out[0], _RecorderWithFuse)


@pytest.mark.parametrize("returned", [None, "not a module", 3])
def test_fuse_returning_no_module_keeps_the_module(returned):
    model = nn.Sequential(_InPlaceFuse(returned))
    out = largekernel.reparameterize(model, inplace=True)
    assert isinstance(out[0], _InPlaceFuse) and out[0].fused


def test_children_of_a_fused_replacement_are_processed():
    log = []
    model = nn.Sequential(nn.Identity(), _FuseToTree(log))
    out = largekernel.reparameterize(model, inplace=True)
    assert isinstance(out[1], nn.Sequential) and isinstance(out[1][0], _Recorder)
    assert [name for name, _ in log] == ["new-child"]
    assert not out.training and not out[1][0].training


def test_self_calling_module_runs_once_per_call_and_again_next_time():
    log = []
    model = nn.Sequential(_SelfCalling(log))
    largekernel.reparameterize(model, inplace=True)
    # its own method once; its child once from the inner call and once from the outer traversal
    assert log.count(("self", False)) == 1
    assert log.count(("child", False)) == 2
    log.clear()
    largekernel.reparameterize(model, inplace=True)  # the guard was released: called again
    assert log.count(("self", False)) == 1


class _Failing(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        return x

    def switch_to_deploy(self):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("first call fails")


def test_guard_is_released_after_an_error():
    m = _Failing()
    with pytest.raises(RuntimeError, match="first call fails"):
        largekernel.reparameterize(m, inplace=True)
    largekernel.reparameterize(m, inplace=True)
    assert m.calls == 2


class _FusesToConv(nn.Module):
    """``fuse()`` returns a 7x7 depthwise conv of the given class (one the engine speeds up)."""

    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def forward(self, x):
        return x

    def fuse(self):
        return self.cls(4, 4, 7, padding=3, groups=4)


def test_created_convs_follow_the_model():
    # an accelerated model: the new conv runs on the engine; a plain conv that existed stays plain
    plain_before = nn.Conv2d(4, 4, 7, padding=3, groups=4)
    accelerated = nn.Sequential(EngineConv2d(4, 4, 7, padding=3, groups=4), plain_before, _FusesToConv(nn.Conv2d))
    out = largekernel.reparameterize(accelerated, inplace=True)
    assert type(out[0]) is EngineConv2d and type(out[1]) is nn.Conv2d and type(out[2]) is EngineConv2d
    # a plain model: a new engine conv goes back to PyTorch's; an engine conv that existed stays
    plain = nn.Sequential(nn.Conv2d(4, 4, 7, padding=3, groups=4), _FusesToConv(EngineConv2d))
    out = largekernel.reparameterize(plain, inplace=True)
    assert type(out[0]) is nn.Conv2d and type(out[1]) is nn.Conv2d
    # no engine conv at all and no new convs: nothing converted
    mixed = nn.Sequential(nn.Conv2d(4, 4, 7, padding=3, groups=4), _FusesToConv(nn.Conv2d))
    out = largekernel.reparameterize(mixed, inplace=True)
    assert type(out[0]) is nn.Conv2d and type(out[1]) is nn.Conv2d


def test_replaced_root_keeps_config_and_is_marked_deploy():
    root = _FusesToConv(nn.Conv2d)
    root.largekernel_config = {"name": "toy", "kwargs": {"a": 1}}
    out = largekernel.reparameterize(root)
    assert type(out) is nn.Conv2d and not out.training
    assert out.largekernel_config == {"name": "toy", "kwargs": {"a": 1}}
    assert out.largekernel_form == "deploy"
    kept = nn.Sequential(nn.Identity())
    assert largekernel.reparameterize(kept, inplace=True).largekernel_form == "deploy"
    assert not hasattr(kept, "largekernel_config")


def test_replaced_root_without_config_gets_none_and_errors_name_the_type():
    out = largekernel.reparameterize(_FusesToConv(nn.Conv2d))
    assert type(out) is nn.Conv2d and not hasattr(out, "largekernel_config")
    with pytest.raises(TypeError, match=r"^model must be an nn.Module, got dict$"):
        largekernel.reparameterize({"not": "a model"})
