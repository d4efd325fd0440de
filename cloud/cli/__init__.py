"""`fleet`: the command line of the hub. One module per command group; ``common`` holds what they share."""

from cloud.cli.app import app, main

__all__ = ["app", "main"]
