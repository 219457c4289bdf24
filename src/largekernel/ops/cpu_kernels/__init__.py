"""Compiled CPU kernels (C, built on first use) with a pure-PyTorch fallback."""
