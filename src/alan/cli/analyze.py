"""`alan analyze` commands (not yet implemented)."""

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
