"""The web dashboard driven in a real headless Chromium."""
