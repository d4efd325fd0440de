"""`fleet demo`: the whole path on one machine. ``run`` drives it; the other modules are its scenarios."""
