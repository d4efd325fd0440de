"""The edgefleet device agent.

Importing this package must stay cheap: no torch, FastAPI or SQL (an edge
device cannot afford them); tests/unit/agent/test_imports.py holds that line.
The parts: ``config`` (TOML), ``agent`` (one device), ``sim`` (many in one
process), ``client`` (the Python API for applications on the device), ``cli``.
"""

__version__ = "0.1.0"
