"""Placeholder: models are registered here by a later change."""
