"""DilatedReparamConv: branch layout, exact reparameterisation (1-D/2-D/3-D, every K), dtypes, errors."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from largekernel.nn.dilated_reparam import DILATED_BRANCHES, DilatedReparamConv
from nn_helpers import randomise_bns

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
# odd sizes, and sizes smaller than the kernel
_SHAPES = {1: [(23,), (4,)], 2: [(9, 14), (3, 5)], 3: [(5, 3, 4), (2, 3, 1)]}


def _reference(m: DilatedReparamConv, x: torch.Tensor) -> torch.Tensor:
    """Training-form output in eval mode, from F.conv + the BN formula, independent of the module."""
    conv = _CONV[m.ndim]
    C, K = m.channels, m.kernel_size

    def bn(y, b):
        shape = (1, -1) + (1,) * m.ndim
        return (y - b.running_mean.view(shape)) / (b.running_var.view(shape) + b.eps).sqrt() * b.weight.view(
            shape
        ) + b.bias.view(shape)

    out = bn(conv(x, m.lk_origin.weight, None, 1, K // 2, 1, C), m.origin_bn)
    ks, rs = DILATED_BRANCHES[K]
    for k, r in zip(ks, rs):
        w = getattr(m, f"dil_conv_k{k}_{r}").weight
        out = out + bn(conv(x, w, None, 1, (r * (k - 1) + 1) // 2, r, C), getattr(m, f"dil_bn_k{k}_{r}"))
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("K", sorted(DILATED_BRANCHES))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_reparameterisation_exact(K, ndim, dtype, tol):
    torch.manual_seed(K * 10 + ndim)
    C = 2
    m = DilatedReparamConv(C, K, ndim=ndim, dtype=dtype)
    randomise_bns(m, seed=K + ndim)
    m.eval()
    xs = [torch.randn((2, C) + s, dtype=dtype) for s in _SHAPES[ndim]]
    with torch.no_grad():
        refs = [_reference(m, x) for x in xs]
        outs = [m(x) for x in xs]
        kernel, bias = m.get_kernel_bias()
        via_kb = [_CONV[ndim](x, kernel, bias, 1, K // 2, 1, C) for x in xs]
    for o, v, r in zip(outs, via_kb, refs):
        assert o.shape == r.shape
        assert _rel(o, r) <= tol
        assert _rel(v, r) <= tol
    m.reparameterize()
    assert m.deploy and set(m.state_dict()) == {"lk_origin.weight", "lk_origin.bias"}
    with torch.no_grad():
        for x, r in zip(xs, refs):
            assert _rel(m(x), r) <= tol


def test_branch_names_and_shapes_follow_official_layout():
    m = DilatedReparamConv(4, 13)
    sd = m.state_dict()
    assert sd["lk_origin.weight"].shape == (4, 1, 13, 13)
    assert "lk_origin.bias" not in sd
    for k, r in zip(*DILATED_BRANCHES[13]):
        assert sd[f"dil_conv_k{k}_{r}.weight"].shape == (4, 1, k, k)
        assert f"dil_bn_k{k}_{r}.running_var" in sd
    assert "dil_conv_k7_2.weight" in sd and "dil_conv_k3_5.weight" in sd


def test_deploy_builds_fused_form_and_reparameterize_is_idempotent():
    d = DilatedReparamConv(4, 7, deploy=True)
    assert set(d.state_dict()) == {"lk_origin.weight", "lk_origin.bias"}
    m = DilatedReparamConv(4, 7)
    randomise_bns(m)
    m.eval()
    m.reparameterize()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.reparameterize()
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    d.load_state_dict(after)  # same layout as deploy=True


class _KernelBias(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self):
        return self.m.get_kernel_bias()


def test_get_kernel_bias_gradcheck():
    torch.manual_seed(0)
    m = DilatedReparamConv(2, 5, dtype=torch.float64)
    randomise_bns(m)
    m.eval()
    wrapper = _KernelBias(m)
    names = ["m.lk_origin.weight", "m.origin_bn.weight", "m.dil_conv_k3_2.weight", "m.dil_bn_k3_2.bias"]
    params = dict(wrapper.named_parameters())

    def fn(*tensors):
        return torch.func.functional_call(wrapper, dict(zip(names, tensors)), ())

    inputs = tuple(params[n].detach().clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(fn, inputs)


def test_get_kernel_bias_has_gradients():
    m = DilatedReparamConv(3, 9)
    kernel, bias = m.get_kernel_bias()
    (kernel.sum() + bias.sum()).backward()
    assert m.lk_origin.weight.grad is not None
    assert all(getattr(m, f"dil_conv_k{k}_{r}").weight.grad is not None for k, r in m.branches)
    assert m.origin_bn.weight.grad is not None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_reparameterises_and_stays_close(dtype):
    torch.manual_seed(1)
    m32 = DilatedReparamConv(4, 13)
    randomise_bns(m32)
    m32.eval()
    m = DilatedReparamConv(4, 13, dtype=dtype).eval()
    m.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in m32.state_dict().items()})
    ref_k, ref_b = DilatedReparamConv.get_kernel_bias(_upcast(m))
    m.reparameterize()
    assert m.lk_origin.weight.dtype == dtype and m.lk_origin.bias.dtype == dtype
    tol = 1e-2 if dtype == torch.float16 else 2e-2
    assert _rel(m.lk_origin.weight.float(), ref_k) <= tol
    assert _rel(m.lk_origin.bias.float(), ref_b) <= tol
    x = torch.randn(1, 4, 11, 11)
    with torch.no_grad():
        y = m(x.to(dtype)).float()
        # the fused half-precision conv against the float64 training-form model (F.conv + BN
        # formula per branch), not against the library's own float32 fusion
        ref = _reference(_upcast(m32).double(), x.double()).float()
    assert _rel(y, ref) <= 5e-2


def _upcast(m):
    import copy

    return copy.deepcopy(m).float().eval()


def test_bad_arguments():
    with pytest.raises(ValueError, match="kernel_size"):
        DilatedReparamConv(4, 3)
    with pytest.raises(ValueError, match="kernel_size"):
        DilatedReparamConv(4, 19)
    with pytest.raises(ValueError, match="kernel_size"):
        DilatedReparamConv(4, 12)
    with pytest.raises(ValueError, match="ndim"):
        DilatedReparamConv(4, 7, ndim=4)
    with pytest.raises(ValueError, match="channels"):
        DilatedReparamConv(0, 7)


def test_uses_engine_convs():
    from largekernel.nn.conv import Conv1d, Conv3d

    assert isinstance(DilatedReparamConv(2, 5, ndim=1).lk_origin, Conv1d)
    assert isinstance(DilatedReparamConv(2, 5, ndim=3).dil_conv_k3_2, Conv3d)


SPEC = __import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "specs" / "unireplknet.md"


def _spec_branch_table() -> dict[int, tuple[tuple[int, ...], tuple[int, ...]]]:
    """The ``| K | small kernels k | dilations r |`` table of the UniRepLKNet spec, parsed."""
    if not SPEC.is_file():
        pytest.skip(f"shared spec not found at {SPEC}")
    lines = SPEC.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.replace(" ", "").startswith("|K|smallkernels"))
    table = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        K, ks, rs = (cell.strip() for cell in line.strip().strip("|").split("|"))
        table[int(K)] = (tuple(int(v) for v in ks.split(",")), tuple(int(v) for v in rs.split(",")))
    return table


def test_every_branch_table_row_matches_the_spec():
    spec = _spec_branch_table()
    assert len(spec) >= 7  # 5, 7, ..., 17: the parser found the table
    assert DILATED_BRANCHES == spec
    for K, (ks, rs) in spec.items():
        m = DilatedReparamConv(3, K)
        assert m.lk_origin.kernel_size == (K, K) and m.lk_origin.padding == (K // 2, K // 2)
        names = {n.split(".")[0] for n in m.state_dict() if n.startswith("dil_conv_")}
        assert names == {f"dil_conv_k{k}_{r}" for k, r in zip(ks, rs)}, K
        for k, r in zip(ks, rs):
            c = getattr(m, f"dil_conv_k{k}_{r}")
            pad = (r * (k - 1) + 1) // 2
            assert (c.kernel_size, c.dilation, c.padding, c.groups) == ((k, k), (r, r), (pad, pad), 3)
            assert c.bias is None and isinstance(getattr(m, f"dil_bn_k{k}_{r}"), torch.nn.BatchNorm2d)
    for K in range(1, 21):  # "other K -> error"
        if K not in spec:
            with pytest.raises(ValueError, match="kernel_size"):
                DilatedReparamConv(3, K)
