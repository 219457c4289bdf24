"""`largekernel info` subcommand (not implemented yet)."""
