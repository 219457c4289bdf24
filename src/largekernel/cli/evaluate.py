"""`largekernel evaluate` subcommand (not implemented yet)."""
