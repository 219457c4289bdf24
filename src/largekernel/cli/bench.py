"""`largekernel bench` subcommand (not implemented yet)."""
