"""Typed clients of the hub's HTTP API.

``hub``: fleet resources (models, devices, assignments); ``signing``: keys and the TUF repository.
"""
