"""Argument checks shared by every stage (infrastructure: imports no lth_jax module).

The package validates concrete inputs eagerly and says what is wrong; inside ``jit`` the
values are unknown, so value checks are skipped there (``is_concrete``).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def is_int(x) -> bool:
  """A Python or numpy integer, not a bool."""
  return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def is_int_seq(x) -> bool:
  """A list or tuple of ``is_int`` values."""
  return isinstance(x, (list, tuple)) and all(is_int(v) for v in x)


def is_concrete(x) -> bool:
  """Not a tracer: the value is known here (outside ``jit``/``vmap``)."""
  return not isinstance(x, jax.core.Tracer)


@jax.jit
def _all_finite(arrays):
  return [jnp.all(jnp.isfinite(a)) for a in arrays]  # one dispatch for all leaves


def check_finite(named: Sequence[tuple[str, jax.Array]], what: str) -> None:
  """ValueError naming the first array of ``(name, array)`` pairs holding NaN or Inf.

  Skipped when any array is traced (its values are unknown here).
  """
  arrays = [a for _, a in named]
  if not arrays or not all(is_concrete(a) for a in arrays):
    return
  for (name, _), ok in zip(named, _all_finite(arrays)):
    if not bool(ok):
      raise ValueError(f"{what} {name} contains NaN or Inf")
