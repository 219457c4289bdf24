"""`largekernel reparameterize` subcommand (not implemented yet)."""
