"""The edgefleet hub: registry, devices, rollouts, transports, API and CLI."""
