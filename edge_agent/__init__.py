"""The edgefleet device agent.

Importing this package must stay cheap: no torch, FastAPI or SQL (an edge
device cannot afford them); tests/unit/agent/test_imports.py holds that line.
The parts: ``config`` (TOML), ``agent`` (one device), ``sim`` (many in one
process), ``client`` (the Python API for applications on the device), ``cli``.
Updates: ``update_machine`` (states, events, the transition table), ``updater``
(the engine: checkpoints, loop guard, resume), ``steps`` (the work per state),
``verify`` (the verifier seam), ``gates`` and ``trial`` (judging a new version),
``outbox`` (the on-disk queue), ``metrics`` and ``report`` (for operators).
"""

__version__ = "0.1.0"
