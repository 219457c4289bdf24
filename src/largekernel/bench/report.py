"""Output helpers shared by the benchmarks: machine info, JSON files, text tables and line plots.

Example:
    >>> from largekernel.bench import report
    >>> payload = {"machine": report.machine_info(), "rows": [{"k": 3, "ms": 1.5}]}
    >>> report.write_json("out.json", payload)  # doctest: +SKIP
    >>> report.plot_lines("out.png", {"fwd": {"torch": ([3, 7], [1.0, 2.5])}},
    ...                   xlabel="K", ylabel="ms", logx=True, logy=True)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pathlib
import platform
import sys
import tempfile
from typing import Any, Callable, Mapping, Sequence

import torch

__all__ = ["machine_info", "cpu_name", "write_json", "format_table", "plot_lines", "to_jsonable"]

log = logging.getLogger(__name__)


def cpu_name() -> str:
    """Human-readable CPU model (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return sorted(f for f in flags if f.startswith(("avx", "fma", "amx")))
    except OSError:
        pass
    return []


def machine_info() -> dict[str, Any]:
    """Facts needed to interpret benchmark numbers: versions, threads, CPU, vector extensions."""
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_flags": _cpu_flags(),
        "torch_threads": torch.get_num_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        from largekernel.ops import cpu_kernels

        info["native_kernels"] = cpu_kernels.is_available()
    except ImportError:  # pragma: no cover - partial installs
        info["native_kernels"] = False
    return info


def to_jsonable(obj: Any) -> Any:
    """Convert tensors, dataclasses, paths, tuples and non-finite floats into plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (torch.dtype, torch.device, pathlib.PurePath)):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no NaN/inf
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return to_jsonable(obj.item())
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def write_json(path: str | os.PathLike, payload: Mapping[str, Any]) -> pathlib.Path:
    """Write ``payload`` as indented JSON, atomically (temp file + replace); returns the path."""
    if not isinstance(payload, Mapping):
        raise TypeError(f"payload must be a mapping, got {type(payload).__name__}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_jsonable(payload), indent=2, sort_keys=False)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("wrote %s", path)
    return path


def write_outputs(json_path: str | os.PathLike | None, plot_path: str | os.PathLike | None,
                  payload: Mapping[str, Any], plot: Callable[[str | os.PathLike], Any]) -> None:
    """A benchmark's outputs: ``payload`` as JSON to ``json_path`` and ``plot(plot_path)``, each if given."""
    if json_path:
        write_json(json_path, payload)
    if plot_path:
        plot(plot_path)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], floatfmt: str = "{:.3g}") -> str:
    """Plain-text table with right-aligned columns; ``None`` shows as ``-``."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return floatfmt.format(value)
        return str(value)

    text_rows = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        if len(row) != len(headers):
            raise ValueError(f"every row must have {len(headers)} cells, got {len(row)}")
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in text_rows]
    return "\n".join(lines)


def plot_lines(
    path: str | os.PathLike,
    panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float | None]]]],
    *,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    logy: bool = False,
    title: str | None = None,
    ncols: int = 2,
) -> pathlib.Path:
    """Save a grid of line plots as PNG (matplotlib's Agg canvas; no display needed).

    Args:
        path: output file (``.png``).
        panels: ``{panel title: {series label: (xs, ys)}}``; ``None`` y values are skipped.
        xlabel, ylabel: axis labels shared by every panel.
        logx, logy: log-scale axes.
        title: figure title.
        ncols: panels per row.

    Returns:
        The written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    if not panels:
        raise ValueError("panels must contain at least one panel")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ncols = min(ncols, len(panels))
    nrows = -(-len(panels) // ncols)
    # Figure + Agg canvas directly: no pyplot global state, works headless and in threads
    fig = Figure(figsize=(5.5 * ncols, 4.0 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    # one colour per series label across all panels, so panels can be compared at a glance
    labels = list(dict.fromkeys(label for series in panels.values() for label in series))
    palette = [f"C{i % 10}" for i in range(len(labels))]
    colour = dict(zip(labels, palette))
    for ax, (name, series) in zip(axes.flat, panels.items()):
        all_x: set[float] = set()
        for label, (xs, ys) in series.items():
            pts = [(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y) and (y > 0 or not logy)]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=label, color=colour[label])
                all_x.update(p[0] for p in pts)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logx:
            ax.set_xscale("log")
            if len(all_x) == 1:  # a lone point: give the axis some room around it
                (only,) = all_x
                ax.set_xlim(only / 1.5, only * 1.5)
            if all_x and len(all_x) <= 16:
                # label the measured x values in plain numbers instead of powers of ten
                ax.set_xticks(sorted(all_x))
                ax.xaxis.set_major_formatter(ScalarFormatter())
                ax.xaxis.set_minor_formatter(NullFormatter())
        if logy:
            ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    log.info("wrote %s", path)
    return path
