"""Modules: drop-in convs, reparameterisable large-kernel layers and operators."""
