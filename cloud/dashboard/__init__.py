"""The fleet dashboard: static pages the hub serves under ``/ui/``, reading the same /api/v1 as the CLI.

Plain HTML, JavaScript modules and CSS shipped as package data: nothing to build with Node.js and
nothing loaded from another origin, so the strict Content-Security-Policy below holds.
"""

from __future__ import annotations

from cloud.dashboard.mount import CSP, UI_PATH, mount_dashboard

__all__ = ["CSP", "UI_PATH", "mount_dashboard"]
