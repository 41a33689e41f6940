"""Reports: text tables (``tables``) and figures (``figures``, the only matplotlib user)
of the experiments' results. Imports only the stages below it; writes nothing itself
except the figures' PNGs through ``lth_jax.files``."""
