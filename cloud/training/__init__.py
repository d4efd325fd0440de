"""Training runs with lineage (``runs``) and their optimization into bundles (``optimize``).

Both import torch: only the hub and its CLI load them, and only when a command needs them.
"""
