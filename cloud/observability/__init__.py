"""The hub's metrics (Prometheus), API request timing and structured logs; see docs/operations.md."""
