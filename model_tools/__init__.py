"""Everything about a model artifact: data, training, export, evaluation.

Light modules (importable on a device) import no torch; torch-heavy modules
say so in their docstring and are imported only by the hub.
"""
