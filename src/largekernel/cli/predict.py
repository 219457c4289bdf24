"""`largekernel predict` subcommand (not implemented yet)."""
