"""Data sets that work offline, behind a registry."""
