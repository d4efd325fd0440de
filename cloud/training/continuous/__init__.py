"""Continuous training: triggers, the train -> optimize -> evaluate -> register pipeline, and its policy."""
