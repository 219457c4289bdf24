"""Benchmarks: ratios against PyTorch measured in the same run, written as JSON and plots."""
