"""What the HTTP API speaks: pydantic models per resource.

``fleet``: models, experiments, bundles, devices, events; ``signing``: keys, rotations, firmware.
"""
