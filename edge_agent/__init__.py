"""The edgefleet device agent.

Importing this package must stay cheap: no torch, FastAPI or SQL (an edge
device cannot afford them); tests/unit/test_agent_imports.py holds that line.
"""

__version__ = "0.1.0"
