"""The hub's HTTP API (FastAPI): the contract the CLI and dashboards use."""

from cloud.api.app import create_app

__all__ = ["create_app"]
