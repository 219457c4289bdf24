"""Run logging: JSON-lines metrics, optional TensorBoard, tqdm progress, summary tables."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["MetricsLogger", "progress", "format_table"]

log = logging.getLogger(__name__)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


class MetricsLogger:
    """Appends one JSON object per event to ``<dir>/metrics.jsonl`` (and TensorBoard scalars).

    Only the main rank should create one with ``enabled=True``; others get a no-op logger.

    Example:
        >>> import tempfile
        >>> logger = MetricsLogger(tempfile.mkdtemp())
        >>> logger.log("train", step=1, loss=0.5)
        >>> logger.close()
    """

    def __init__(self, directory: str | Path, *, enabled: bool = True, tensorboard: bool = False) -> None:
        self.enabled = enabled
        self.path = Path(directory) / "metrics.jsonl"
        self._file = None
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except Exception as err:  # tensorboard is an optional dependency
                log.warning("TensorBoard unavailable (%s); install the 'tensorboard' extra", err)
            else:
                self._tb = SummaryWriter(log_dir=str(Path(directory) / "tensorboard"))

    def log(self, kind: str, step: int, **values: Any) -> None:
        if not self.enabled or self._file is None:
            return
        record = {"kind": kind, "step": int(step), "time": time.time(), **_jsonable(values)}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def progress(iterable: Iterable, *, total: int | None = None, desc: str = "", disable: bool = False,
             initial: int = 0):
    """A tqdm bar (throughput + ETA) on stderr, or the bare iterable when disabled."""
    if disable:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, initial=initial, dynamic_ncols=True,
                leave=False, file=sys.stderr, mininterval=0.5)


def format_table(rows: Sequence[tuple[str, Any]], title: str = "") -> str:
    """Two-column text table (for the final summary, logged)."""
    width = max((len(k) for k, _ in rows), default=0)
    lines = [title] if title else []
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines)
