"""accelerate(): converts plain torch convs in any model, sharing parameters, outputs unchanged."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from largekernel.nn.acceleration import accelerate
from largekernel.nn.conv import Conv1d, Conv2d, Conv3d


class Block(nn.Module):
    """UniRepLKNet-like: depthwise large conv + BN + pointwise MLP with residual."""

    def __init__(self, c: int, k: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, k, padding=k // 2, groups=c)
        self.norm = nn.BatchNorm2d(c)
        self.pw = nn.Sequential(nn.Conv2d(c, 2 * c, 1), nn.GELU(), nn.Conv2d(2 * c, c, 1))

    def forward(self, x):
        return x + self.pw(self.norm(self.dwconv(x)))


class CustomConv(nn.Conv2d):
    """A foreign subclass with its own forward: must be left alone."""

    def forward(self, x):
        return super().forward(x) * 2


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.stages = nn.ModuleList([nn.Sequential(Block(8, 13), Block(8, 7)), nn.Sequential(Block(8, 5))])
        self.branches = nn.ModuleDict(
            {"a": nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"), "b": CustomConv(8, 8, 3, padding=1)}
        )
        self.shared = self.stages[0][0].dwconv  # the same module reachable twice
        self.seq1d = nn.Conv1d(8, 8, 9, padding=4, groups=8)
        self.vol = nn.Conv3d(2, 2, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x)
        for s in self.stages:
            x = s(x)
        x = self.branches["a"](x) + self.branches["b"](x) + self.shared(x)
        b, c, h, w = x.shape
        x = x + self.seq1d(x.flatten(2)).view(b, c, h, w)
        x = x + self.vol(x.reshape(b, 2, 4, h, w)).reshape(b, c, h, w)
        return self.head(x.mean((2, 3)))


def _count(model, cls):
    return sum(type(m) is cls for m in model.modules())


def test_accelerate_nested_model_outputs_and_params():
    torch.manual_seed(0)
    model = Net().double()
    ref = copy.deepcopy(model)
    params_before = {n: p for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    calls = []
    model.stem.register_forward_hook(lambda m, i, o: calls.append("hook"))
    model.train()
    out = accelerate(model, only_helpful=False)
    assert out is model
    # every plain conv converted, the foreign subclass untouched, shared module still shared
    assert _count(model, nn.Conv2d) == 0 and _count(model, nn.Conv1d) == 0 and _count(model, nn.Conv3d) == 0
    assert _count(model, Conv2d) == 1 + 3 * 3 + 1 and _count(model, Conv1d) == 1 and _count(model, Conv3d) == 1
    assert type(model.branches["b"]) is CustomConv
    assert model.shared is model.stages[0][0].dwconv
    # the very same Parameter objects, so the optimiser keeps working
    for n, p in model.named_parameters():
        assert p is params_before[n]
    opt_ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert opt_ids == {id(p) for p in model.parameters()}
    assert model.training and model.stem.weight.dtype == torch.float64
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    y, yr = model(x), ref(x)
    assert calls == ["hook"]
    torch.testing.assert_close(y, yr)
    y.sum().backward()
    yr.sum().backward()
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)
    opt.step()  # updates the shared params in place
    assert not torch.equal(model.stem.weight, ref.stem.weight)
    model.eval()
    ref.load_state_dict(model.state_dict())
    ref.eval()
    torch.testing.assert_close(model(x), ref(x))


def test_idempotent_and_state_dict_unchanged():
    model = Net()
    sd_keys = list(model.state_dict().keys())
    accelerate(model)
    classes = [type(m) for m in model.modules()]
    accelerate(model)
    assert [type(m) for m in model.modules()] == classes
    assert list(model.state_dict().keys()) == sd_keys


def test_not_inplace_and_min_kernel_size():
    model = Net()
    copy_ = accelerate(model, inplace=False, min_kernel_size=7)
    assert copy_ is not model
    assert _count(model, Conv2d) == 0  # original untouched
    assert type(copy_.stages[0][0].dwconv) is Conv2d and type(copy_.stages[0][1].dwconv) is Conv2d
    assert type(copy_.stages[1][0].dwconv) is nn.Conv2d  # 5x5 below the threshold
    assert type(copy_.stem) is nn.Conv2d and type(copy_.seq1d) is Conv1d


def test_accelerate_single_conv_and_errors():
    conv = nn.Conv2d(4, 4, 13, padding=6, groups=4)
    assert type(accelerate(conv)) is Conv2d
    with pytest.raises(TypeError, match="nn.Module"):
        accelerate("not a model")
    with pytest.raises(ValueError, match="min_kernel_size"):
        accelerate(nn.Sequential(), min_kernel_size=0)


def test_to_torch_convs_is_the_inverse_of_accelerate():
    import torch
    from torch import nn

    from largekernel.nn.acceleration import accelerate, to_torch_convs
    from largekernel.nn.conv import Conv2d

    torch.manual_seed(0)
    net = nn.Sequential(Conv2d(4, 4, 13, padding=6, groups=4), nn.Conv2d(4, 8, 1))
    params = [id(p) for p in net.parameters()]
    x = torch.randn(2, 4, 16, 16)
    expected = net(x)
    to_torch_convs(net)
    assert [type(m) for m in net] == [nn.Conv2d, nn.Conv2d]
    assert [id(p) for p in net.parameters()] == params
    torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)
    accelerate(net)
    assert [type(m) for m in net] == [Conv2d, type(accelerate(nn.Conv2d(1, 1, 1)))]
