"""Drivers: one per experiment (``sweep``, ``experiment1``, ``edge_popup``), config in,
files out; ``common`` holds what they share, ``flags`` the entry points' config-flag
loader and failure line. Nothing in lth_jax imports this package;
``experiments/*.py`` call it."""
