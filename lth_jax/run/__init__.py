"""Drivers: one per experiment (``sweep``, ``experiment1``, ``edge_popup``), config in,
files out; ``common`` holds what they share. Nothing in lth_jax imports this package;
``experiments/*.py`` call it."""
