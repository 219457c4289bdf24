"""Per-module efficiency profile: MACs, parameters, bytes, arithmetic intensity, time, roofline.

Every leaf module (one without children) of the model is instrumented with hooks during a
forward pass (``train=False``, eval mode, no autograd) or a training step (``train=True``:
forward, a loss and backward, timed through full backward hooks). For each one:

* **MACs** in the papers' convention (shared with :func:`largekernel.models.counting.count_macs`):
  convolutions ``out.numel() * C_in/groups * prod(kernel)``, linear layers
  ``out.numel() * in_features``, nothing for normalisations, activations and element-wise work.
  ``FLOPs = 2 * MACs`` forward, three times that for a training step (input and weight gradients).
* **bytes moved** -- a compulsory-traffic estimate: forward reads every input tensor, the
  module's own parameters and buffers and writes its outputs; backward additionally reads the
  output gradient, the input and the parameters and writes the input and parameter gradients.
  Views (a ``permute``) are counted like copies, and multi-pass kernels (normalisations) move more
  than this: the estimate is a lower bound for real kernels, so their extra passes show up as lost time.
* **arithmetic intensity** = FLOPs / bytes, **achieved GF/s** = FLOPs / measured time, and the
  **efficiency gap** -- measured time minus the roofline time ``max(FLOPs / peak, bytes / bandwidth)``
  for this machine's measured matmul peak and copy bandwidth (:func:`largekernel.analysis.peak.measure_peak`).

Time spent outside leaf modules (residual adds, reshapes inside a block's ``forward``) is
reported as ``unattributed``.
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
import time
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from largekernel.analysis.peak import MachinePeak, get_clock, measure_peak, median_seconds

__all__ = ["LayerProfile", "ModelProfile", "profile_model", "parse_input_size", "layer_macs"]

log = logging.getLogger(__name__)

_SKIP = (nn.Identity, nn.Dropout)


def parse_input_size(text: str | Sequence[int], arg: str = "--input") -> tuple[int, ...]:
    """``"1x3x224x224"`` (or a sequence) -> ``(1, 3, 224, 224)``; errors name ``arg``.

    Example:
        >>> parse_input_size("2x3x64x64")
        (2, 3, 64, 64)
    """
    if isinstance(text, str):
        parts = text.lower().replace(",", "x").split("x")
        try:
            size = tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"{arg} must look like 1x3x224x224 (N x C x H x W), got {text!r}") from None
    else:
        size = tuple(text)
    if len(size) < 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise ValueError(f"{arg} must be positive ints N x C x H x W (e.g. 1x3x224x224), got {text!r}")
    return size


def layer_macs(module: nn.Module, output: Any) -> int:
    """MACs of one call of ``module`` that produced ``output`` (papers' convention; 0 if not conv/linear).

    Example:
        >>> conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        >>> layer_macs(conv, conv(torch.zeros(1, 3, 10, 10)))
        21600
    """
    if not isinstance(output, torch.Tensor):
        return 0
    if isinstance(module, nn.modules.conv._ConvNd):
        return output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in _tensors(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _tensors(item)]
    return []


def _nbytes(tensors: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _describe(module: nn.Module) -> str:
    if isinstance(module, nn.modules.conv._ConvNd):
        k = "x".join(map(str, module.kernel_size))
        if module.groups == module.in_channels == module.out_channels and module.groups > 1:
            kind = "depthwise"
        elif module.groups > 1:
            kind = f"grouped({module.groups})"
        else:
            kind = "dense"
        stride = max(module.stride)
        return f"{kind} conv {k}" + (f" s{stride}" if stride > 1 else "")
    if isinstance(module, nn.Linear):
        return "linear"
    return type(module).__name__


@dataclass
class LayerProfile:
    """One leaf module's counts and measurements (times in seconds, per step)."""

    name: str
    type: str
    kind: str
    calls: int
    macs: int
    flops: float
    params: int
    bytes: int
    intensity: float
    time_s: float | None = None
    gflops: float | None = None
    efficiency: float | None = None
    ideal_s: float | None = None
    lost_s: float | None = None


@dataclass
class ModelProfile:
    """The profile of one model on one input (see :func:`profile_model`)."""

    label: str
    input_size: tuple[int, ...]
    train: bool
    form: str
    engine: bool
    layers: list[LayerProfile]
    total_macs: int
    total_params: int
    step_time_s: float | None = None
    hooked_time_s: float | None = None
    unattributed_s: float | None = None
    peak: MachinePeak | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def efficiency_gap(self, top: int | None = 15) -> list[LayerProfile]:
        """Timed layers ranked by time lost against their roofline time (largest first)."""
        timed = [layer for layer in self.layers if layer.lost_s is not None]
        timed.sort(key=lambda layer: layer.lost_s, reverse=True)
        return timed if top is None else timed[:top]

    def by_kind(self) -> list[dict[str, Any]]:
        """Layers grouped by kind (e.g. ``depthwise conv 13x13``), ranked by time lost."""
        groups: dict[str, dict[str, Any]] = defaultdict(lambda: dict(layers=0, macs=0, flops=0.0, bytes=0,
                                                                       time_s=0.0, ideal_s=0.0, lost_s=0.0))
        for layer in self.layers:
            g = groups[layer.kind]
            g["layers"] += 1
            g["macs"] += layer.macs
            g["flops"] += layer.flops
            g["bytes"] += layer.bytes
            for key in ("time_s", "ideal_s", "lost_s"):
                g[key] += getattr(layer, key) or 0.0
        rows = []
        for kind, g in groups.items():
            g["kind"] = kind
            g["intensity"] = g["flops"] / g["bytes"] if g["bytes"] else 0.0
            g["gflops"] = g["flops"] / g["time_s"] / 1e9 if g["time_s"] > 0 else None
            rows.append(g)
        rows.sort(key=lambda g: g["lost_s"], reverse=True)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return {
            "label": self.label, "input_size": list(self.input_size), "train": self.train, "form": self.form,
            "engine": self.engine, "total_macs": self.total_macs, "total_params": self.total_params,
            "step_time_s": self.step_time_s, "hooked_time_s": self.hooked_time_s,
            "unattributed_s": self.unattributed_s, "peak": self.peak.to_dict() if self.peak else None,
            "layers": [asdict(layer) for layer in self.layers], "by_kind": self.by_kind(), **self.meta,
        }

    def format_gap_table(self, top: int = 15, by_kind: bool = False) -> str:
        """Markdown table of the efficiency gap (layers, or kinds with ``by_kind``)."""
        if by_kind:
            head = "| kind | layers | MMACs | FLOP/byte | time ms | GF/s | roofline ms | lost ms |"
            lines = [head, "|---|---|---|---|---|---|---|---|"]
            for g in self.by_kind()[:top]:
                lines.append(f"| {g['kind']} | {g['layers']} | {g['macs'] / 1e6:.1f} | {g['intensity']:.1f} | "
                             f"{1e3 * g['time_s']:.2f} | {_fmt(g['gflops'])} | {1e3 * g['ideal_s']:.3f} | "
                             f"{1e3 * g['lost_s']:.2f} |")
            return "\n".join(lines)
        head = "| layer | kind | MMACs | FLOP/byte | time ms | GF/s | % of peak | roofline ms | lost ms |"
        lines = [head, "|---|---|---|---|---|---|---|---|---|"]
        for layer in self.efficiency_gap(top):
            eff = f"{100 * layer.efficiency:.1f}" if layer.efficiency is not None else "–"
            lines.append(f"| {layer.name} | {layer.kind} | {layer.macs / 1e6:.2f} | {layer.intensity:.1f} | "
                         f"{1e3 * layer.time_s:.3f} | {_fmt(layer.gflops)} | {eff} | {1e3 * layer.ideal_s:.4f} | "
                         f"{1e3 * layer.lost_s:.3f} |")
        return "\n".join(lines)

    def plot_roofline(self, path: str | Path, annotate: int = 6) -> None:
        """Log-log roofline: achieved GF/s of every timed conv/linear layer vs. arithmetic intensity."""
        from largekernel.analysis.plotting import pyplot

        if self.peak is None:
            raise ValueError("the profile has no measured peak (profile_model(..., measure=True))")
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7, 4.8))
        points = [layer for layer in self.layers if layer.flops > 0 and layer.gflops]
        kinds = sorted({layer.kind for layer in points})
        cmap = plt.get_cmap("tab10")
        for i, kind in enumerate(kinds):
            sel = [layer for layer in points if layer.kind == kind]
            sizes = [20 + 400 * layer.time_s / max(lay.time_s for lay in points) for layer in sel]
            ax.scatter([layer.intensity for layer in sel], [layer.gflops for layer in sel], s=sizes,
                       alpha=0.6, color=cmap(i % 10), label=kind)
        lo = min([layer.intensity for layer in points] + [self.peak.ridge_point]) / 3
        hi = max([layer.intensity for layer in points] + [self.peak.ridge_point]) * 3
        xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
        ax.plot(xs, [self.peak.attainable_gflops(x) for x in xs], "k-", lw=1.5,
                label=f"roofline ({self.peak.matmul_gflops:.0f} GF/s, {self.peak.bandwidth_gbs:.1f} GB/s)")
        for layer in self.efficiency_gap(annotate):
            if layer.flops > 0 and layer.gflops:
                ax.annotate(layer.name, (layer.intensity, layer.gflops), fontsize=6, alpha=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (FLOP / byte)")
        ax.set_ylabel("achieved GFLOP/s")
        mode = "train step" if self.train else "forward"
        ax.set_title(f"{self.label} {'x'.join(map(str, self.input_size))}, {mode}, {self.form} form, "
                     f"{'engine' if self.engine else 'PyTorch convs'}", fontsize=9)
        ax.legend(fontsize=6, loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        log.info("wrote %s", path)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}" if value < 10 else f"{value:.0f}"


class _Recorder:
    """Forward/backward hooks accumulating per-module counts and wall-clock times."""

    def __init__(self, modules: dict[str, nn.Module], train: bool, timed: bool, clock=time.perf_counter) -> None:
        self.modules = modules
        self.clock = clock
        self.train = train
        self.timed = timed
        self.handles: list[Any] = []
        self.counts: dict[str, dict[str, int]] = {}
        self.times: dict[str, float] = defaultdict(float)
        self._starts: dict[str, list[float]] = defaultdict(list)
        self._bstarts: dict[str, list[float]] = defaultdict(list)
        self.counting = True
        for name, module in modules.items():
            self.handles.append(module.register_forward_pre_hook(self._pre(name)))
            self.handles.append(module.register_forward_hook(self._post(name, module)))
            if train and timed:
                self.handles.append(module.register_full_backward_pre_hook(self._bpre(name)))
                self.handles.append(module.register_full_backward_hook(self._bpost(name)))

    def _pre(self, name: str):
        def hook(module, inputs):
            if self.timed:
                self._starts[name].append(self.clock())
        return hook

    def _post(self, name: str, module: nn.Module):
        own = [p for p in module.parameters(recurse=False)] + [b for b in module.buffers(recurse=False)]

        def hook(mod, inputs, output):
            if self.timed and self._starts[name]:
                self.times[name] += self.clock() - self._starts[name].pop()
            if not self.counting:
                return
            ins, outs = _tensors(inputs), _tensors(output)
            in_b, out_b, par_b = _nbytes(ins), _nbytes(outs), _nbytes(own)
            fwd_bytes = in_b + out_b + par_b
            macs = layer_macs(mod, output)
            entry = self.counts.setdefault(name, dict(calls=0, macs=0, bytes=0))
            entry["calls"] += 1
            entry["macs"] += macs
            # backward: read grad_out, input, params; write grad_in, grad_params
            entry["bytes"] += fwd_bytes + ((out_b + 2 * in_b + 2 * par_b) if self.train else 0)
        return hook

    def _bpre(self, name: str):
        def hook(module, grad_output):
            self._bstarts[name].append(self.clock())
        return hook

    def _bpost(self, name: str):
        def hook(module, grad_input, grad_output):
            if self._bstarts[name]:
                self.times[name] += self.clock() - self._bstarts[name].pop()
        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def _prepare(model: nn.Module, deploy: bool, accelerate: bool | None) -> tuple[nn.Module, str]:
    model = copy.deepcopy(model)
    form = getattr(model, "largekernel_form", None)
    if deploy:
        from largekernel.reparam import reparameterize

        model = reparameterize(model, inplace=True)
        form = "deploy"
    if form is None:
        from largekernel.models.counting import count_params
        from largekernel.reparam import reparameterize

        fused = reparameterize(copy.deepcopy(model), inplace=True)
        form = "train" if count_params(fused) != count_params(model) else "deploy"
    if accelerate is True:
        from largekernel.nn.acceleration import accelerate as to_engine

        model = to_engine(model, inplace=True)
    elif accelerate is False:
        from largekernel.nn.acceleration import to_torch_convs

        model = to_torch_convs(model, inplace=True)
    return model, form


def _uses_engine(model: nn.Module) -> bool:
    from largekernel.nn.conv import TORCH_TO_ENGINE

    engine = tuple(TORCH_TO_ENGINE.values())
    return any(isinstance(m, engine) for m in model.modules())


def profile_model(model: nn.Module, input_size: str | Sequence[int] = (1, 3, 224, 224), *, train: bool = False,
                  deploy: bool = False, accelerate: bool | None = True, measure: bool = True, repeats: int = 3,
                  warmup: int = 1, peak: MachinePeak | None = None, label: str | None = None,
                  progress: bool = False, seed: int = 0, clock: str = "wall") -> ModelProfile:
    """Profile every leaf module of ``model`` on a random input of ``input_size``.

    The model is copied (never modified). ``deploy=True`` reparameterises the copy first;
    ``accelerate=True`` puts its convolutions on the engine, ``False`` on PyTorch's own, ``None``
    leaves them as they are.

    Args:
        model: The model (a model on the ``meta`` device works with ``measure=False``).
        input_size: ``N x C x H x W`` as a sequence or a ``"1x3x224x224"`` string.
        train: Time a training step (forward, cross-entropy or mean-square loss, backward) in
            train mode instead of an inference forward in eval mode.
        deploy: Reparameterise (fuse) first.
        accelerate: Engine (``True``), PyTorch convolutions (``False``) or unchanged (``None``).
        measure: Time the layers and measure the machine's roofs; ``False`` only counts.
        repeats: Timed steps (per-layer and whole-step times are medians over them).
        warmup: Untimed steps first.
        peak: Roofs to compare against (default: measured now with :func:`measure_peak`).
        label: Name used in tables and plots.
        progress: Show a progress bar over the timed steps.
        seed: Seed of the random input.
        clock: ``"wall"`` (elapsed time) or ``"cpu"`` (this process's CPU time: with one thread,
            not inflated by other processes competing for the cores; it misses the work of
            intra-op worker threads, so use it with ``torch.set_num_threads(1)``).

    Returns:
        A :class:`ModelProfile`; its ``total_macs`` equals :func:`~largekernel.models.counting.count_macs`.

    Example:
        >>> import largekernel
        >>> m = largekernel.create_model("unireplknet_a", num_classes=10, depths=(1, 1, 1, 1),
        ...     dims=(8, 16, 32, 64), kernel_sizes=((3,), (7,), (7,), (3,)))
        >>> p = profile_model(m, "1x3x32x32", measure=False)
        >>> p.total_macs == largekernel.count_macs(m, (1, 3, 32, 32))
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    size = parse_input_size(input_size, "input_size")
    get_clock(clock)  # unknown clock: fail before any work
    for name, value, low in (("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    ref = next(iter(model.parameters()), None)
    on_meta = ref is not None and ref.device.type == "meta"
    if on_meta and measure:
        raise ValueError("a model on the meta device can only be counted: pass measure=False")
    if on_meta and deploy:
        raise ValueError("deploy=True needs real weights (reparameterise before moving to meta)")
    if on_meta:  # nothing to convert or fuse: only shapes matter
        prepared, form = copy.deepcopy(model), getattr(model, "largekernel_form", "unknown")
    else:
        prepared, form = _prepare(model, deploy, accelerate)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(size, generator=g, dtype=torch.float32).to(device=device, dtype=dtype) if not on_meta \
        else torch.empty(size, device="meta", dtype=dtype)
    leaves = {name or "(model)": m for name, m in prepared.named_modules()
              if not any(True for _ in m.children()) and not isinstance(m, _SKIP)}

    def step() -> None:
        if train:
            out = prepared(x)
            out = out[-1] if isinstance(out, (list, tuple)) else out
            if out.ndim == 2:
                target = torch.zeros(out.shape[0], dtype=torch.long, device=out.device)
                loss = F.cross_entropy(out.float(), target)
            else:
                loss = out.float().pow(2).mean()
            with warnings.catch_warnings():
                # the first layer's input needs no gradient; its backward hook still fires (on
                # the output gradient), which is what the timing wants
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                loss.backward()
            for p in prepared.parameters():
                p.grad = None
        else:
            with torch.no_grad():
                prepared(x)

    prepared.train(train)
    recorder = _Recorder(leaves, train, timed=False)
    try:
        if train and not on_meta:
            step()
        else:
            with torch.no_grad():
                prepared(x)
    finally:
        recorder.remove()
    counts = recorder.counts

    per_layer_times: dict[str, list[float]] = defaultdict(list)
    hooked: list[float] = []
    step_time = None
    if measure:
        timer = get_clock(clock)
        peak = peak or measure_peak(clock=clock)
        step_time = median_seconds(step, repeats, warmup, clock)
        recorder = _Recorder(leaves, train, timed=True, clock=timer)
        recorder.counting = False
        iterator = range(repeats)
        if progress:
            from largekernel.analysis.plotting import progress_bar

            iterator = progress_bar(iterator, total=repeats, desc="profile")
        try:
            for _ in iterator:
                recorder.times.clear()
                start = timer()
                step()
                hooked.append(timer() - start)
                for name in leaves:
                    per_layer_times[name].append(recorder.times.get(name, 0.0))
        finally:
            recorder.remove()

    flop_factor = 6.0 if train else 2.0
    layers = []
    for name, module in leaves.items():
        c = counts.get(name)
        if c is None:  # never called in this forward (e.g. an unused head)
            continue
        flops = flop_factor * c["macs"]
        params = sum(p.numel() for p in module.parameters(recurse=False))
        layer = LayerProfile(name, type(module).__name__, _describe(module), c["calls"], c["macs"], flops, params,
                             c["bytes"], flops / c["bytes"] if c["bytes"] else 0.0)
        if measure:
            t = statistics.median(per_layer_times[name])
            layer.time_s = t
            layer.gflops = flops / t / 1e9 if t > 0 and flops > 0 else None
            layer.efficiency = layer.gflops / peak.matmul_gflops if layer.gflops else None
            layer.ideal_s = max(flops / (peak.matmul_gflops * 1e9), c["bytes"] / (peak.bandwidth_gbs * 1e9))
            layer.lost_s = t - layer.ideal_s
        layers.append(layer)
    from largekernel.models.counting import count_params

    hooked_median = statistics.median(hooked) if hooked else None
    attributed = sum(layer.time_s for layer in layers if layer.time_s is not None)
    return ModelProfile(
        label or type(model).__name__, size, train, form, _uses_engine(prepared), layers,
        sum(layer.macs for layer in layers), count_params(prepared), step_time, hooked_median,
        (hooked_median - attributed) if hooked_median is not None else None, peak if measure else None,
        {"threads": torch.get_num_threads(), "repeats": repeats, "clock": clock},
    )
