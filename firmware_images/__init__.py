"""Firmware images: the bundle format, building bundles and binary deltas, sample images.

``format`` (standard library only) and ``delta`` (bsdiff4 / zstandard, imported when
used) are what the device agent needs to read and apply what the hub ships; ``build``
and ``samples`` are the release side. The package imports nothing from the hub or the
agent.
"""
