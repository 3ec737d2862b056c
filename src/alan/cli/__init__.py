"""Command-line interface (typer). Nothing here computes: it calls the Python API."""
