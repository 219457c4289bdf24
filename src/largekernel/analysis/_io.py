"""Output helpers shared by the analysis tools and their commands (PNG + JSON next to each other)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("largekernel")


def output_paths(prefix: str, *suffixes: str) -> list[Path]:
    """``PREFIX.png``, ``PREFIX.json`` ... (creating the parent directory)."""
    base = Path(prefix)
    if base.suffix in (".png", ".json"):
        base = base.with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    return [base.parent / f"{base.name}{s}" for s in suffixes]


def write_json(path: Path, payload: Any) -> None:
    from largekernel.bench.report import to_jsonable

    path.write_text(json.dumps(to_jsonable(payload), indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s", path)
