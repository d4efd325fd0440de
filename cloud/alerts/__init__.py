"""Alerts: rules over cohort metrics, firing and resolved states with history, webhook delivery."""
