"""Fleet telemetry at scale: raw sketch windows, rollups per cohort x version x bucket, retention."""
