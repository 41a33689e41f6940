"""Drivers: one per experiment, config in, files out (``sweep``; Experiment 1 and
edge-popup join). ``common`` holds what they share. Nothing in lth_jax imports this
package; ``experiments/*.py`` call it."""
