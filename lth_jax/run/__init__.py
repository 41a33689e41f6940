"""Drivers: config in, files out; nothing in lth_jax imports this package."""
