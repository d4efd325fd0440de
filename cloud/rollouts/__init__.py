"""Staged rollouts: a plan of stages over cohorts, judged by gates, advanced by one engine.

The pure core has no database and no I/O, so each rule can be tested on its own:

- ``machine``: the rollout's states, the events that move it, and the one table between them;
- ``plan``: the plan an operator writes (YAML or JSON), validated with every problem listed;
- ``selection``: which stage a device belongs to (sticky hash buckets, no stored randomness);
- ``gates``: the figures of a stage judged against the plan's thresholds;
- ``windows``: when a maintenance window is open.

The engine (``engine``, ``service``, ``figures``, ``scheduler``) builds on these and does the I/O.
"""
