"""Instance sources of chunked solving (programs stage): instances described, not stored.

An ``InstanceSource`` produces the SubsetSum instances ``0 .. N-1`` one chunk at a time, so
``streaming.solve_stream`` can solve more of them than fit in memory:

* ``DirectSource``: the ``"direct"`` construction at scale. Instance ``i``'s target is
  ``weights[i]`` (any array-like, e.g. ``np.load(path, mmap_mode="r")``), or, with no
  weights, a ``U[low, high]`` draw from ``fold_in(weight_key, i)``; its ``n`` coefficients
  are ``U[low, high]`` draws from ``fold_in(key, i // group_size)`` (``group_size = d_in``
  with row-major ``(d_out, d_in)`` weights shares one vector per output row, as the
  official code does). Everything random is generated per chunk on the device.
* ``ArraySource``: explicit ``targets (N,)`` and ``coefficients (N, n)`` or ``(n,)``
  (numpy arrays or memmaps; only one chunk is read at a time).
"""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import subset_sum


def _as_key(key) -> jax.Array:
  if isinstance(key, (int, np.integer)):
    return jax.random.key(int(key))
  key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
  if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(key)
  return key


def _key_json(key: jax.Array) -> list[int]:
  return [int(v) for v in np.asarray(jax.random.key_data(key)).reshape(-1)]


def _hash_array(x, block: int = 1 << 22) -> str:
  """sha256 of an array-like's float32 bytes, read ``block`` rows at a time."""
  h = hashlib.sha256()
  h.update(repr(tuple(np.shape(x))).encode())
  for s in range(0, max(len(x), 1), block):
    h.update(np.ascontiguousarray(np.asarray(x[s:s + block], np.float32)).tobytes())
  return h.hexdigest()


def _padded(x: np.ndarray, size: int) -> np.ndarray:
  if x.shape[0] == size:
    return x
  return np.pad(x, [(0, size - x.shape[0])] + [(0, 0)] * (x.ndim - 1))


class InstanceSource:
  """Instances ``0 .. num_instances - 1``, each ``n`` coefficients, produced per chunk.

  ``host_chunk(start, count, size)`` reads the host data of instances
  ``start .. start + count - 1`` padded to ``size`` rows (a dict of numpy arrays, possibly
  empty). ``device_chunk(args, host, start, size)`` is a pure function traced inside
  ``jit``: from ``args = device_args()`` (keys, ranges, shared coefficients), the chunk's
  host arrays and its first index, it returns ``targets (size,)`` and ``coefficients
  (size, n)`` (rows past ``count`` are ignored). ``program_key()`` names the program
  structure (equal keys share one compiled program). ``fingerprint()`` is a JSON-able
  description of the instances: a restart must see the same one.
  """

  num_instances: int
  n: int

  def host_chunk(self, start: int, count: int, size: int) -> dict[str, np.ndarray]:
    raise NotImplementedError

  def device_args(self) -> dict:
    raise NotImplementedError

  def device_chunk(self, args: dict, host: dict, start: jax.Array, size: int):
    raise NotImplementedError

  def program_key(self) -> tuple:
    raise NotImplementedError

  def fingerprint(self) -> dict:
    raise NotImplementedError


class ArraySource(InstanceSource):
  """Explicit instances: ``targets (N,)``; ``coefficients (N, n)`` or ``(n,)`` shared."""

  def __init__(self, targets, coefficients, fingerprint: str | None = None):
    if np.ndim(targets) != 1 or len(targets) == 0:
      raise ValueError(f"targets must be a non-empty 1-D array, got shape {np.shape(targets)}")
    shape = np.shape(coefficients)
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[0] != len(targets)):
      raise ValueError(f"coefficients must be (N, n) with N = {len(targets)} or (n,), got "
                       f"{shape}")
    self.targets, self.coefficients = targets, coefficients
    self.shared = len(shape) == 1
    self.num_instances, self.n = len(targets), int(shape[-1])
    if not 1 <= self.n <= subset_sum.MAX_N:
      raise ValueError(f"need 1 <= n <= {subset_sum.MAX_N}, got {self.n}")
    self._fingerprint = fingerprint

  def host_chunk(self, start, count, size):
    out = {"t": _padded(np.asarray(self.targets[start:start + count], np.float32), size)}
    if not self.shared:
      out["c"] = _padded(np.asarray(self.coefficients[start:start + count], np.float32), size)
    return out

  def device_args(self):
    return {"c": np.asarray(self.coefficients, np.float32)} if self.shared else {}

  def device_chunk(self, args, host, start, size):
    c = jnp.broadcast_to(args["c"], (size, self.n)) if self.shared else host["c"]
    return host["t"], c

  def program_key(self):
    return ("array", self.n, self.shared)

  def fingerprint(self):
    if self._fingerprint is None:
      self._fingerprint = _hash_array(self.targets) + ":" + _hash_array(
          np.asarray(self.coefficients)[None] if self.shared else self.coefficients)
    return {"kind": "array", "num_instances": self.num_instances, "n": self.n,
            "sha256": self._fingerprint}


class DirectSource(InstanceSource):
  """The ``"direct"`` construction's instances, coefficients generated per chunk.

  Args:
    n: coefficients per weight.
    key: int seed or PRNG key of the coefficients (group ``g`` uses ``fold_in(key, g)``).
    low, high: range of the uniform coefficients (and of generated weights).
    weights: target weights ``(N,)`` (array-like; a memmap is read chunk by chunk), or
      ``None`` to draw weight ``i`` from ``fold_in(weight_key, i)`` (then pass
      ``num_weights``).
    num_weights: ``N`` when ``weights`` is None.
    group_size: consecutive weights sharing one coefficient vector (1: one per weight).
    weight_key: int seed or key of generated weights (default: ``fold_in(key, 0x5EED)``).
    fingerprint: identifies ``weights`` in the manifest (default: their sha256).
  """

  def __init__(self, n: int, key, low: float = -0.464, high: float = 0.541, *,
               weights=None, num_weights: int | None = None, group_size: int = 1,
               weight_key=None, fingerprint: str | None = None):
    if not 1 <= int(n) <= subset_sum.MAX_N:
      raise ValueError(f"need 1 <= n <= {subset_sum.MAX_N}, got {n}")
    if not float(low) < float(high):
      raise ValueError(f"need low < high, got [{low}, {high}]")
    if int(group_size) < 1:
      raise ValueError(f"group_size must be positive, got {group_size}")
    if weights is None:
      if num_weights is None or int(num_weights) < 1:
        raise ValueError("pass weights, or num_weights >= 1 to generate them")
      self.num_instances = int(num_weights)
      if weight_key is None:
        weight_key = jax.random.fold_in(_as_key(key), 0x5EED)
      self.weight_key = _as_key(weight_key)
    else:
      if np.ndim(weights) != 1 or len(weights) == 0:
        raise ValueError(f"weights must be a non-empty 1-D array, got {np.shape(weights)}")
      if num_weights is not None and int(num_weights) != len(weights):
        raise ValueError(f"num_weights {num_weights} != len(weights) {len(weights)}")
      self.num_instances = len(weights)
      self.weight_key = None
    self.n, self.key, self.low, self.high = int(n), _as_key(key), float(low), float(high)
    self.weights, self.group_size = weights, int(group_size)
    self._fingerprint = fingerprint

  def host_chunk(self, start, count, size):
    if self.weights is None:
      return {}
    return {"t": _padded(np.asarray(self.weights[start:start + count], np.float32), size)}

  def device_args(self):
    args = {"key": self.key, "low": np.float32(self.low), "high": np.float32(self.high)}
    if self.weights is None:
      args["weight_key"] = self.weight_key
    return args

  def device_chunk(self, args, host, start, size):
    idx = start + jnp.arange(size, dtype=jnp.int32)
    draw = lambda k, shape: jax.random.uniform(k, shape, jnp.float32, args["low"], args["high"])
    coefs = jax.vmap(lambda g: draw(jax.random.fold_in(args["key"], g), (self.n,)))(
        idx // self.group_size)
    if self.weights is None:
      targets = jax.vmap(lambda i: draw(jax.random.fold_in(args["weight_key"], i), ()))(idx)
    else:
      targets = host["t"]
    return targets, coefs

  def program_key(self):
    return ("direct", self.n, self.group_size, self.weights is None)

  def fingerprint(self):
    out = {"kind": "direct", "num_instances": self.num_instances, "n": self.n,
           "key": _key_json(self.key), "low": self.low, "high": self.high,
           "group_size": self.group_size}
    if self.weights is None:
      out["weight_key"] = _key_json(self.weight_key)
    else:
      if self._fingerprint is None:
        self._fingerprint = _hash_array(self.weights)
      out["weights_sha256"] = self._fingerprint
    return out
