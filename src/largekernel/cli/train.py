"""`largekernel train` subcommand (not implemented yet)."""
