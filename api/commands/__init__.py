"""CLI commands, one module per capability; each registers on ``api.cli.main``."""
