"""Every ```python block of the README runs as written (in order, one namespace, in a scratch dir)."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def python_blocks() -> list[str]:
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def test_readme_has_python_snippets():
    assert len(python_blocks()) >= 3


@pytest.mark.parametrize("section", ["all"])
def test_readme_python_blocks_run(tmp_path, section):
    blocks = python_blocks()
    script = ["import torch", "torch.manual_seed(0)", "torch.set_num_threads(2)"]
    for i, block in enumerate(blocks):
        script.append(f"print('--- README block {i} ---', flush=True)")
        script.append(block)
    path = tmp_path / "readme_blocks.py"
    path.write_text("\n".join(script), encoding="utf-8")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    done = re.findall(r"--- README block (\d+) ---", proc.stdout)
    assert proc.returncode == 0, (
        f"README block {done[-1] if done else '?'} failed:\n{proc.stderr[-3000:]}"
    )
