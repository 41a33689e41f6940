"""Experiment 2: edge-popup (Ramanujan et al. 2020) on random networks, as pure functions.

Networks (no biases anywhere; kernels in JAX's `x @ K` layout, K of shape (d_in, d_out)):

* architectures: "fc2" (784-h-10), "fc4" (784-h-h-h-10), "lenet5" (conv 1->6 5x5 pad 2, ReLU,
  maxpool 2, conv 6->16 5x5, ReLU, maxpool 2, then FC 400-120-84-10). h = `hidden` (500).
  The two convolutions are random and frozen in every variant (never masked, never trained);
  they depend only on the seed, so all variants and levels of one seed share them.
* variants:
  - "relu" and "linear": every FC layer of the architecture is replaced by a redundant layer
    with r copies (SPEC section 6): weight1 (d_in, r) [PyTorch: (r, d_in)], shared by all
    outputs; weight2 (d_in * r, d_out) [PyTorch: (d_out, d_in * r)], hidden unit j * r + k
    for input j, copy k. y = act(x_j * (weight1 * mask1)[j, k]) @ (weight2 * mask2), act = ReLU
    for "relu" (the theory's construction) and the identity for "linear". The target's ReLU
    follows every redundant layer but the last. Init: weight1 ~ N(0, 2), weight2 ~ N(0, 2/d_in),
    scores U(-std, std) with the same std.
  - "wide": plain supermask FC layers whose hidden width matches the redundant network's
    parameter count (`wide_hidden_width`); weights N(0, 2/fan_in), scores U(+-1/sqrt(fan_in)).
  - "dense": the unpruned architecture with its weights trained by SGD (baseline); PyTorch's
    default init U(+-1/sqrt(fan_in)); keep_fraction does not apply (recorded as 1.0).
* masks: one score per FC weight; the mask keeps exactly round(keep_fraction * size) entries
  of largest |score| per tensor (`lth_jax.supermask`). keep_fraction is the fraction KEPT;
  the paper's grid lists the fraction REMOVED (`PAPER_REMOVED_FRACTIONS`), keep = 1 - removed.
  Parameter counts cover the FC layers only (convolutions are never pruned), as in the paper.

A sweep trains every (seed, keep_fraction) model of one (architecture, variant) at once: the
state carries leading axes (S seeds, L levels), keep_fraction is a traced (L,) array, and a
single jitted step updates all S * L models. Frozen weights depend on the seed only and are
stored once per seed. Checkpoints (orbax) after every epoch make a killed run resumable with
bit-identical results.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pathlib
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from lth_jax import masks as masks_lib
from lth_jax import files as files_lib, supermask

ARCHS = ("fc2", "fc4", "lenet5")
VARIANTS = ("linear", "relu", "wide", "dense")
SUPERMASK_VARIANTS = ("linear", "relu", "wide")
# The paper's pruning grid, as the fraction of weights REMOVED per layer.
PAPER_REMOVED_FRACTIONS = (0.0, 0.01, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95,
                           0.975, 0.98, 0.99)
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
NUM_CLASSES = 10
_LENET5_FC_IN = 400
_LENET5_FC_HIDDEN = (120, 84)

Params = Any


def keep_fractions_from_removed(removed: Sequence[float]) -> tuple[float, ...]:
  """The paper's fractions REMOVED -> our fractions KEPT (1 - removed, rounded to 1e-10)."""
  out = []
  for r in removed:
    if not 0.0 <= r < 1.0:
      raise ValueError(f"removed fraction must be in [0, 1), got {r}")
    out.append(round(1.0 - float(r), 10))
  return tuple(out)


# ----------------------------------------------------------------------------- sizes


def target_fc_dims(arch: str, hidden: int = 500) -> tuple[int, ...]:
  """Widths of the target's FC layers, input first: fc2 (784, h, 10), fc4 (784, h, h, h, 10),
  lenet5 (400, 120, 84, 10) (`hidden` does not apply to LeNet5)."""
  if arch == "fc2":
    return (784, hidden, NUM_CLASSES)
  if arch == "fc4":
    return (784, hidden, hidden, hidden, NUM_CLASSES)
  if arch == "lenet5":
    return (_LENET5_FC_IN, *_LENET5_FC_HIDDEN, NUM_CLASSES)
  raise ValueError(f"unknown architecture {arch!r}; expected one of {ARCHS}")


def dense_param_count(dims: Sequence[int]) -> int:
  """Weights of a bias-free MLP with layer widths `dims`: sum d_in * d_out."""
  return sum(a * b for a, b in zip(dims[:-1], dims[1:]))


def redundant_param_count(dims: Sequence[int], redundancy: int) -> int:
  """Weights of the redundant network: each layer has r * d_in (weight1) + r * d_in * d_out
  (weight2). FC2/FC4/LeNet5 (h = 500, r = 5): 1,991,420 / 4,496,420 / 297,620."""
  return sum(redundancy * (a + a * b) for a, b in zip(dims[:-1], dims[1:]))


def wide_hidden_width(dims: Sequence[int], redundancy: int) -> int:
  """Hidden width w of the "wide" net (same depth, every hidden layer of width w) whose
  weight count matches the redundant net's P: with n = len(dims) - 1 layers, the count is
  (n - 2) w^2 + (d_0 + d_n) w, so w = P / (d_0 + d_n) for n = 2 and otherwise the positive
  root of the quadratic, rounded to the nearest integer. FC2/FC4/LeNet5 (h = 500, r = 5):
  2508 / 1314 / 378."""
  n_layers = len(dims) - 1
  if n_layers < 2:
    raise ValueError("a wide network needs at least one hidden layer")
  p = redundant_param_count(dims, redundancy)
  a, b = n_layers - 2, dims[0] + dims[-1]
  width = p / b if a == 0 else (-b + math.sqrt(b * b + 4 * a * p)) / (2 * a)
  return int(round(width))


@dataclasses.dataclass(frozen=True)
class EdgePopupNet:
  """Static description of one network: architecture, variant, sizes (hashable, jit-static)."""

  arch: str
  variant: str
  hidden: int = 500
  redundancy: int = 5

  def __post_init__(self):
    target_fc_dims(self.arch, self.hidden)
    if self.variant not in VARIANTS:
      raise ValueError(f"unknown variant {self.variant!r}; expected one of {VARIANTS}")
    if self.hidden < 1 or self.redundancy < 1:
      raise ValueError("hidden and redundancy must be positive")

  @property
  def target_dims(self) -> tuple[int, ...]:
    return target_fc_dims(self.arch, self.hidden)

  @property
  def fc_dims(self) -> tuple[int, ...]:
    """Widths of this network's FC layers (the wide variant's hidden widths differ)."""
    dims = self.target_dims
    if self.variant == "wide":
      w = wide_hidden_width(dims, self.redundancy)
      return (dims[0],) + (w,) * (len(dims) - 2) + (dims[-1],)
    return dims

  @property
  def is_redundant(self) -> bool:
    return self.variant in ("linear", "relu")

  @property
  def is_supermask(self) -> bool:
    return self.variant in SUPERMASK_VARIANTS

  @property
  def has_convs(self) -> bool:
    return self.arch == "lenet5"

  def fc_shapes(self) -> dict[str, dict[str, tuple[int, ...]]]:
    """Shapes of the FC weights, by layer ("fc1", ...) and name ("weight1"/"weight2" for
    redundant layers, "kernel" otherwise)."""
    dims, r = self.fc_dims, self.redundancy
    shapes = {}
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
      if self.is_redundant:
        shapes[f"fc{i + 1}"] = {"weight1": (a, r), "weight2": (a * r, b)}
      else:
        shapes[f"fc{i + 1}"] = {"kernel": (a, b)}
    return shapes

  def param_count(self) -> int:
    """FC weights of this network (what the paper counts; convolutions excluded)."""
    if self.is_redundant:
      return redundant_param_count(self.fc_dims, self.redundancy)
    return dense_param_count(self.fc_dims)

  def remaining_params(self, keep_fraction: float) -> int:
    """FC weights kept at `keep_fraction` (exact per-tensor counts); dense: all of them."""
    if not self.is_supermask:
      return self.param_count()
    return sum(supermask.kept_count_host(math.prod(s), keep_fraction)
               for layer in self.fc_shapes().values() for s in layer.values())


# ----------------------------------------------------------------------------- init


def _rng(seed: int, *stream: int) -> np.random.Generator:
  return np.random.default_rng([int(seed), *stream])


def _conv_weights(seed: int) -> dict:
  """LeNet5's two convolutions (HWIO), PyTorch default init U(+-1/sqrt(fan_in))."""
  shapes = {"conv1": (5, 5, 1, 6), "conv2": (5, 5, 6, 16)}
  out = {}
  for i, (name, shape) in enumerate(shapes.items()):
    bound = 1.0 / math.sqrt(shape[0] * shape[1] * shape[2])
    out[name] = {"kernel": _rng(seed, 0, i).uniform(-bound, bound, shape).astype(np.float32)}
  return out


def init_edge_popup(net: EdgePopupNet, seed: int) -> tuple[Params, Params]:
  """Returns (frozen, trainable) nested dicts of float32 arrays, drawn on the host with numpy
  from `seed` (fast, no XLA compilation, identical on every platform).

  Supermask variants: frozen = all weights (convs + FC), trainable = one score per FC weight
  (same structure as the FC part). Dense: frozen = the convs (LeNet5) or {}, trainable = the
  FC kernels. The convs depend on `seed` only (identical across variants).
  """
  frozen = _conv_weights(seed) if net.has_convs else {}
  fc_weights, scores = {}, {}
  for i, (layer, shapes) in enumerate(net.fc_shapes().items()):
    fc_weights[layer], scores[layer] = {}, {}
    for j, (name, shape) in enumerate(shapes.items()):
      rng_w, rng_s = _rng(seed, 1, i, j), _rng(seed, 2, i, j)
      fan_in = shape[0]
      if net.is_redundant:  # weight1 ~ N(0, 2), weight2 ~ N(0, 2 / d_in)
        d_in = shapes["weight1"][0]
        std = math.sqrt(2.0) if name == "weight1" else math.sqrt(2.0 / d_in)
        score_bound = std
      elif net.variant == "wide":  # kaiming normal (fan_in); scores kaiming uniform
        std = math.sqrt(2.0 / fan_in)
        score_bound = 1.0 / math.sqrt(fan_in)
      else:  # dense baseline: PyTorch nn.Linear default
        bound = 1.0 / math.sqrt(fan_in)
        fc_weights[layer][name] = rng_w.uniform(-bound, bound, shape).astype(np.float32)
        continue
      fc_weights[layer][name] = (std * rng_w.standard_normal(shape, np.float32))
      scores[layer][name] = rng_s.uniform(-score_bound, score_bound, shape).astype(
          np.float32)
  to_jax = lambda tree: jax.tree_util.tree_map(jnp.asarray, tree)
  if net.is_supermask:
    return to_jax({**frozen, **fc_weights}), to_jax(scores)
  return to_jax(frozen), to_jax(fc_weights)


# ----------------------------------------------------------------------------- forward


def redundant_layer(x: jax.Array, weight1: jax.Array, weight2: jax.Array,
                    use_relu: bool) -> jax.Array:
  """x (B, d_in), weight1 (d_in, r), weight2 (d_in * r, d_out) -> (B, d_out).

  Equals repeating x r times, multiplying elementwise by weight1, optional ReLU, then a
  linear map with weight2 (unit j * r + k), without materialising the repeated input. The
  linear variant folds the two weights first (x @ sum_k weight1[:, k] weight2[j*r+k]),
  which is r times cheaper and mathematically the same map.
  """
  d_in, r = weight1.shape
  w2 = weight2.reshape(d_in, r, weight2.shape[-1])
  if not use_relu:
    return x @ jnp.einsum("jk,jko->jo", weight1, w2)
  h = jax.nn.relu(jnp.einsum("bj,jk->bjk", x, weight1))
  return h.reshape(x.shape[0], d_in * r) @ weight2


def features(net: EdgePopupNet, weights: Params, images: jax.Array) -> jax.Array:
  """Input of the FC part: flattened images (FC nets) or LeNet5's frozen conv features."""
  if not net.has_convs:
    return images.reshape(images.shape[0], -1)
  x = images.reshape(images.shape[0], 28, 28, 1)
  dn = ("NHWC", "HWIO", "NHWC")
  pool = lambda y: jax.lax.reduce_window(y, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1),
                                        "VALID")
  x = jax.lax.conv_general_dilated(x, weights["conv1"]["kernel"], (1, 1), ((2, 2), (2, 2)),
                                   dimension_numbers=dn)
  x = pool(jax.nn.relu(x))
  x = jax.lax.conv_general_dilated(x, weights["conv2"]["kernel"], (1, 1), "VALID",
                                   dimension_numbers=dn)
  x = pool(jax.nn.relu(x))
  return x.reshape(x.shape[0], -1)  # (B, 400)


def fc_forward(net: EdgePopupNet, weights: Params, x: jax.Array) -> jax.Array:
  """The FC part on features x with (already masked) weights -> logits."""
  n = len(net.fc_dims) - 1
  for i in range(n):
    layer = weights[f"fc{i + 1}"]
    if net.is_redundant:
      x = redundant_layer(x, layer["weight1"], layer["weight2"], net.variant == "relu")
    else:
      x = x @ layer["kernel"]
    if i < n - 1:
      x = jax.nn.relu(x)
  return x


def effective_weights(net: EdgePopupNet, frozen: Params, trainable: Params,
                      masks: Params | None) -> Params:
  """The weights the forward pass uses: frozen * mask (straight-through to the scores) for
  supermask variants, frozen convs + trained kernels for the dense baseline."""
  if not net.is_supermask:
    return {**frozen, **trainable}
  fc = jax.tree_util.tree_map(supermask.masked_weight,
                              {k: frozen[k] for k in trainable}, trainable, masks)
  return {**frozen, **fc}


def apply_edge_popup(net: EdgePopupNet, frozen: Params, trainable: Params, images: jax.Array,
                     keep_fraction=1.0, *, method: str = "bisect") -> jax.Array:
  """Logits of one network; `keep_fraction` (fraction KEPT, may be traced) is ignored for
  the dense baseline. Differentiable in `trainable` (straight-through for the scores)."""
  masks = None
  if net.is_supermask:
    masks = supermask.topk_masks(trainable, keep_fraction, method=method)
  w = effective_weights(net, frozen, trainable, masks)
  return fc_forward(net, w, features(net, frozen, images))


def ticket_masks(net: EdgePopupNet, frozen: Params, trainable: Params, keep_fraction,
                 *, method: str = "bisect") -> Params:
  """Boolean masks shaped like the network's weights (`frozen`), None for the convolutions
  (never pruned): the layout `masks.to_jaxpruner` and `masks.save_masks_npz` take."""
  if not net.is_supermask:
    raise ValueError("the dense baseline has no mask")
  masks = supermask.topk_masks(trainable, keep_fraction, method=method)
  out = {k: jax.tree_util.tree_map(lambda _: None, v) for k, v in frozen.items()
         if k not in masks}
  out.update(masks)
  return out


# ----------------------------------------------------------------------------- the sweep


def make_optimizer(learning_rate: float, *, momentum: float = 0.9, weight_decay: float = 5e-4,
                   steps_per_epoch: int, epochs: int) -> optax.GradientTransformation:
  """SGD with momentum and L2 weight decay (PyTorch `SGD(weight_decay=...)` semantics: the
  decay is added to the gradient before momentum) and a cosine schedule stepped once per
  epoch, like `CosineAnnealingLR(T_max=epochs)` in the official code. Only the trainable
  tree (scores, or the dense baseline's kernels) is ever handed to it."""
  def schedule(count):
    epoch = jnp.floor_divide(count, steps_per_epoch).astype(jnp.float32)
    return learning_rate * 0.5 * (1.0 + jnp.cos(jnp.pi * epoch / epochs))
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.sgd(schedule, momentum=momentum))


def init_sweep(net: EdgePopupNet, seeds: Sequence[int], n_levels: int
               ) -> tuple[Params, Params]:
  """frozen with leading axis S (one set of random weights per seed, shared by all levels,
  as in the official runs, which reuse one seed for every sparsity) and trainable with
  leading axes (S, L) (every level starts from the same scores)."""
  per_seed = [init_edge_popup(net, s) for s in seeds]
  stack = lambda *leaves: jnp.stack(leaves)
  frozen = jax.tree_util.tree_map(stack, *[f for f, _ in per_seed])
  trainable = jax.tree_util.tree_map(
      lambda *leaves: jnp.repeat(jnp.stack(leaves)[:, None], n_levels, axis=1),
      *[t for _, t in per_seed])
  return frozen, trainable


def _sweep_masks(net, trainable, keep_fractions, method):
  if not net.is_supermask:
    return None
  s, l = jax.tree_util.tree_leaves(trainable)[0].shape[:2]
  keep = jnp.broadcast_to(jnp.asarray(keep_fractions, jnp.float32)[None, :], (s, l))
  return supermask.topk_masks(trainable, keep, batch_dims=2, method=method)


def make_sweep_step(net: EdgePopupNet, optimizer: optax.GradientTransformation, *,
                    method: str = "bisect", jit: bool = True) -> Callable:
  """step(frozen, trainable, opt_state, keep_fractions (L,), images (B, ...), labels (B,))
  -> (trainable, opt_state, losses (S, L)): one SGD step of all S * L models.

  Masks of every model are computed in one batched top-k (traced k per level); gradients
  reach only `trainable` (the frozen weights are plain, non-differentiated arguments); the
  LeNet5 conv features are computed once per seed and shared by the L levels.
  """
  def loss_fn(trainable_m, frozen_s, masks_m, feats, labels):
    w = effective_weights(net, frozen_s, trainable_m, masks_m)
    logits = fc_forward(net, w, feats)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  grad_fn = jax.value_and_grad(loss_fn)

  def per_seed(frozen_s, trainable_s, masks_s, images, labels):
    feats = features(net, frozen_s, images)
    return jax.vmap(grad_fn, in_axes=(0, None, 0, None, None))(
        trainable_s, frozen_s, masks_s, feats, labels)

  def step(frozen, trainable, opt_state, keep_fractions, images, labels):
    masks = _sweep_masks(net, trainable, keep_fractions, method)
    losses, grads = jax.vmap(per_seed, in_axes=(0, 0, 0, None, None))(
        frozen, trainable, masks, images, labels)
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, losses

  return jax.jit(step, donate_argnums=(1, 2)) if jit else step


def make_sweep_eval(net: EdgePopupNet, *, method: str = "bisect") -> Callable:
  """evaluate(frozen, trainable, keep_fractions, images, labels, batch_size=1000) -> test
  accuracies (S, L) as numpy; masks are computed once, the test set runs in padded batches."""
  @jax.jit
  def prepare(frozen, trainable, keep_fractions):
    masks = _sweep_masks(net, trainable, keep_fractions, method)
    fn = lambda f, t, m: jax.vmap(
        lambda tt, mm: effective_weights(net, f, tt, mm), in_axes=(0, 0))(t, m)
    return jax.vmap(fn)(frozen, trainable, masks)

  @jax.jit
  def count(frozen, weights, images, labels, valid):
    def per_seed(frozen_s, weights_s):
      feats = features(net, frozen_s, images)
      def per_level(w):
        pred = jnp.argmax(fc_forward(net, w, feats), axis=-1)
        return jnp.sum((pred == labels) & valid, dtype=jnp.int32)
      return jax.vmap(per_level)(weights_s)
    return jax.vmap(per_seed)(frozen, weights)

  def evaluate(frozen, trainable, keep_fractions, images, labels, batch_size=1000):
    weights = prepare(frozen, trainable, jnp.asarray(keep_fractions, jnp.float32))
    n = len(labels)
    batch_size = min(batch_size, n)
    correct = 0
    for start in range(0, n, batch_size):
      x, y = images[start:start + batch_size], labels[start:start + batch_size]
      valid = np.ones(batch_size, bool)
      if pad := batch_size - len(y):
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
        y = np.concatenate([y, np.zeros(pad, y.dtype)])
        valid[-pad:] = False
      correct = correct + count(frozen, weights, x, y, valid)
    return np.asarray(correct) / n

  return evaluate


# ----------------------------------------------------------------------------- training loop


def _format_seconds(s: float) -> str:
  s = int(round(s))
  return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _finite_or_none(x: float) -> float | None:
  return float(x) if math.isfinite(x) else None


class RunProgress:
  """Progress of a whole run in training steps, for the log lines' overall percentage and ETA.

  `total_steps` counts every step of every sweep up front. Steps finished by an earlier,
  interrupted process are `skip`ped: they count as done but not toward the measured time per
  step (they cost this process nothing). The ETA is linear, (seconds per step measured so far,
  compilation and evaluation included) x (steps left); sweeps differ in cost per step, so the
  estimate of a multi-sweep run is rough until the expensive sweeps have been seen.
  """

  def __init__(self, total_steps: int):
    self.total_steps = int(total_steps)
    self.skipped = 0
    self.stepped = 0
    self.start = time.perf_counter()

  def skip(self, steps: int) -> None:
    self.skipped += int(steps)

  def step(self) -> None:
    self.stepped += 1

  @property
  def done(self) -> int:
    return self.skipped + self.stepped

  def eta_seconds(self) -> float:
    if self.stepped == 0:
      return math.nan
    per_step = (time.perf_counter() - self.start) / self.stepped
    return per_step * max(self.total_steps - self.done, 0)

  def describe(self) -> str:
    """E.g. "overall 37.5% (300/800 steps), ETA 1m43s"."""
    percent = 100.0 * self.done / self.total_steps if self.total_steps else 100.0
    eta = self.eta_seconds()
    eta_text = _format_seconds(eta) if math.isfinite(eta) else "?"
    return f"overall {percent:.1f}% ({self.done}/{self.total_steps} steps), ETA {eta_text}"


class _SweepCheckpoints:
  """orbax CheckpointManager for one sweep: {trainable, opt_state} + JSON {rows, epoch}."""

  def __init__(self, directory: pathlib.Path):
    import orbax.checkpoint as ocp  # imported only when checkpoints are asked for
    self._ocp = ocp
    self.manager = ocp.CheckpointManager(
        directory.absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                             enable_async_checkpointing=False))

  def latest(self) -> int | None:
    return self.manager.latest_step()

  def restore_meta(self, step: int) -> dict:
    ocp = self._ocp
    return self.manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"]

  def restore_state(self, step: int, state_template: Any) -> Any:
    ocp = self._ocp
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state_template)
    return self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))["state"]

  def save(self, step: int, state: Any, meta: dict) -> None:
    ocp = self._ocp
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


@dataclasses.dataclass
class EdgePopupResult:
  """Rows (one per seed x level x epoch) and the final state of one (arch, variant) sweep."""

  net: EdgePopupNet
  seeds: tuple[int, ...]
  keep_fractions: tuple[float, ...]
  rows: list[dict]
  frozen: Params
  trainable: Params


@functools.lru_cache(maxsize=16)
def _sweep_programs(net, learning_rate, momentum, weight_decay, steps_per_epoch, epochs, method):
  """(optimizer, jitted step, eval) per static setting, so repeated sweeps in one process
  (tests, notebooks, a resumed run) reuse the compiled programs."""
  optimizer = make_optimizer(learning_rate, momentum=momentum, weight_decay=weight_decay,
                             steps_per_epoch=steps_per_epoch, epochs=epochs)
  return (optimizer, make_sweep_step(net, optimizer, method=method),
          make_sweep_eval(net, method=method))


def train_sweep(net: EdgePopupNet, train_images: np.ndarray, train_labels: np.ndarray,
                test_images: np.ndarray, test_labels: np.ndarray, *,
                keep_fractions: Sequence[float], seeds: Sequence[int] = (0,), epochs: int,
                learning_rate: float, batch_size: int = 64, momentum: float = 0.9,
                weight_decay: float = 5e-4, data_seed: int = 0, method: str = "bisect",
                eval_batch_size: int = 1000, checkpoint_dir: str | os.PathLike | None = None,
                on_epoch_end: Callable[[int, list[dict]], None] | None = None,
                log_every_seconds: float = 30.0, row_extra: dict | None = None,
                progress: RunProgress | None = None) -> EdgePopupResult:
  """Trains all (seed, keep_fraction) models of `net` together and evaluates after each epoch.

  Images must already be normalised (N, 28, 28, 1) float32. Each epoch visits the training
  set in an order drawn from (data_seed, epoch) and drops the last partial batch. With
  `checkpoint_dir`, the state is saved after every epoch and an existing checkpoint is
  resumed from (bit-identical to an uninterrupted run). `on_epoch_end(epoch, rows)` is called
  after each finished (and saved) epoch. A progress line (epoch, step, overall percentage and
  ETA of `progress`) is logged at most every `log_every_seconds` (0: after every step);
  `progress` spans a whole run (`run_experiment`), by default this sweep alone, and is told
  about the steps a resumed checkpoint already holds. Returns an `EdgePopupResult`; rows hold
  arch, variant, seed, epoch, keep_fraction, removed_fraction, remaining_params,
  total_params, test_accuracy and train_loss (mean over the epoch's steps).
  """
  if not net.is_supermask:
    keep_fractions = (1.0,)
  keep_fractions = tuple(float(k) for k in keep_fractions)
  seeds = tuple(int(s) for s in seeds)
  if not keep_fractions or any(not 0.0 < k <= 1.0 for k in keep_fractions):
    raise ValueError(f"keep fractions must be in (0, 1], got {keep_fractions}")
  n_train = len(train_labels)
  steps_per_epoch = n_train // batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"{n_train} training examples make no batch of {batch_size}")
  optimizer, step_fn, eval_fn = _sweep_programs(
      net, float(learning_rate), float(momentum), float(weight_decay), steps_per_epoch,
      int(epochs), method)
  frozen, trainable = init_sweep(net, seeds, len(keep_fractions))
  opt_state = optimizer.init(trainable)
  keep_arr = jnp.asarray(keep_fractions, jnp.float32)

  rows: list[dict] = []
  start_epoch = 0
  settings = {"net": dataclasses.asdict(net), "keep_fractions": list(keep_fractions),
              "seeds": list(seeds), "epochs": int(epochs), "learning_rate": learning_rate,
              "batch_size": batch_size, "momentum": momentum, "weight_decay": weight_decay,
              "data_seed": data_seed, "method": method, "n_train": n_train,
              "n_test": len(test_labels)}
  settings = json.loads(json.dumps(settings))  # as it reads back from the checkpoint
  ckpt = _SweepCheckpoints(pathlib.Path(checkpoint_dir)) if checkpoint_dir else None
  if ckpt is not None and (last := ckpt.latest()) is not None:
    meta = ckpt.restore_meta(last)
    if meta.get("settings") != settings:
      ckpt.close()
      raise ValueError(f"checkpoint in {checkpoint_dir} was written with other settings: "
                       f"{meta.get('settings')} != {settings}")
    state = ckpt.restore_state(last, {"trainable": trainable, "opt_state": opt_state})
    trainable, opt_state = state["trainable"], state["opt_state"]
    rows, start_epoch = list(meta["rows"]), int(meta["epoch"])
    logging.info("%s/%s: resumed after epoch %d from %s", net.arch, net.variant,
                 start_epoch, checkpoint_dir)
  if progress is None:
    progress = RunProgress(epochs * steps_per_epoch)
  progress.skip(start_epoch * steps_per_epoch)

  total_params = net.param_count()
  remaining = [net.remaining_params(k) for k in keep_fractions]
  tag = f"{net.arch}/{net.variant}"
  n_models = len(seeds) * len(keep_fractions)
  t_start, steps_done = time.perf_counter(), 0
  try:
    for epoch in range(start_epoch, epochs):
      order = np.random.default_rng([data_seed, epoch]).permutation(n_train)
      loss_sum = jnp.zeros((len(seeds), len(keep_fractions)), jnp.float32)
      t_log = time.perf_counter()
      for i in range(steps_per_epoch):
        idx = order[i * batch_size:(i + 1) * batch_size]
        trainable, opt_state, losses = step_fn(frozen, trainable, opt_state, keep_arr,
                                               train_images[idx], train_labels[idx])
        loss_sum = loss_sum + losses
        steps_done += 1
        progress.step()
        if time.perf_counter() - t_log >= log_every_seconds:
          losses.block_until_ready()  # time finished steps, not dispatched ones
          t_log = time.perf_counter()
          logging.info("%s: epoch %d/%d step %d/%d (%d models), %.2f s/step; %s",
                       tag, epoch + 1, epochs, i + 1, steps_per_epoch, n_models,
                       (t_log - t_start) / steps_done, progress.describe())
      acc = eval_fn(frozen, trainable, keep_arr, test_images, test_labels, eval_batch_size)
      mean_loss = np.asarray(loss_sum) / steps_per_epoch
      if not np.all(np.isfinite(mean_loss)):
        logging.warning("%s: non-finite training loss at epoch %d", tag, epoch + 1)
      for si, seed in enumerate(seeds):
        for li, keep in enumerate(keep_fractions):
          rows.append({
              **(row_extra or {}),
              "arch": net.arch, "variant": net.variant, "seed": seed,
              "epoch": epoch + 1, "epochs": epochs,
              "keep_fraction": keep, "removed_fraction": round(1.0 - keep, 10),
              "remaining_params": remaining[li], "total_params": total_params,
              "test_accuracy": _finite_or_none(acc[si, li]),
              "train_loss": _finite_or_none(mean_loss[si, li]),
          })
      logging.info("%s: epoch %d/%d done, test accuracy %.4f..%.4f over %d models (%s); %s",
                   tag, epoch + 1, epochs, float(np.min(acc)), float(np.max(acc)), n_models,
                   _format_seconds(time.perf_counter() - t_start), progress.describe())
      if ckpt is not None:
        ckpt.save(epoch + 1, {"trainable": trainable, "opt_state": opt_state},
                  {"epoch": epoch + 1, "rows": rows, "settings": settings})
      if on_epoch_end is not None:
        on_epoch_end(epoch + 1, rows)
  finally:  # also when a hook or a step raises: release the manager (the saves are synchronous)
    if ckpt is not None:
      ckpt.close()
  return EdgePopupResult(net, seeds, keep_fractions, rows, frozen, trainable)


def export_sweep_masks(result: EdgePopupResult, directory: str | os.PathLike, *,
                       method: str = "bisect", packbits: bool = True) -> list[pathlib.Path]:
  """Writes one `.npz` mask file per (seed, keep_fraction) of a supermask sweep:
  `{directory}/seed{seed}_keep{keep:.4f}.npz` (see `lth_jax.masks.save_masks_npz`)."""
  net = result.net
  if not net.is_supermask:
    return []
  paths = []
  for si, seed in enumerate(result.seeds):
    frozen_s = jax.tree_util.tree_map(lambda a: a[si], result.frozen)
    for li, keep in enumerate(result.keep_fractions):
      trainable_m = jax.tree_util.tree_map(lambda a: a[si, li], result.trainable)
      masks = ticket_masks(net, frozen_s, trainable_m, keep, method=method)
      path = pathlib.Path(directory) / f"seed{seed}_keep{keep:.4f}.npz"
      paths.append(masks_lib.save_masks_npz(path, masks, pack=packbits))
  return paths


# ----------------------------------------------------------------------------- experiment


def validate_config(config) -> None:
  """Raises ValueError naming the offending `config.<field>`."""
  def bad(field, msg):
    raise ValueError(f"config.{field} {msg}")
  for a in config.archs:
    if a not in ARCHS:
      bad("archs", f"has unknown architecture {a!r}; expected some of {ARCHS}")
  if not config.archs:
    bad("archs", "is empty")
  for v in config.variants:
    if v not in VARIANTS:
      bad("variants", f"has unknown variant {v!r}; expected some of {VARIANTS}")
  if not config.variants:
    bad("variants", "is empty")
  if not config.removed_fractions:
    bad("removed_fractions", "is empty")
  for r in config.removed_fractions:
    if not 0.0 <= float(r) < 1.0:
      bad("removed_fractions", f"must lie in [0, 1) (fraction REMOVED), got {r}")
  if not config.seeds:
    bad("seeds", "is empty")
  if len(set(config.seeds)) != len(config.seeds):
    bad("seeds", f"has duplicates: {tuple(config.seeds)}")
  for field in ("epochs", "batch_size", "hidden", "redundancy", "eval_batch_size"):
    if int(config[field]) < 1:
      bad(field, f"must be >= 1, got {config[field]}")
  for field in ("train_limit", "test_limit"):
    if int(config[field]) < 0:
      bad(field, f"must be >= 0 (0 = all), got {config[field]}")
  if config.topk_method not in supermask.TOPK_METHODS:
    bad("topk_method", f"must be one of {supermask.TOPK_METHODS}, got {config.topk_method!r}")
  for field in ("lr_fc", "lr_lenet5"):
    if not float(config.optim[field]) > 0:
      bad(f"optim.{field}", f"must be > 0, got {config.optim[field]}")


def _load_split(dataset: str, split: str, data_dir, limit: int):
  from lth_jax import data as data_lib  # the data module is only needed for experiments
  ds = data_lib.load_dataset(dataset, split, data_dir=data_dir, normalize=True,
                             limit=limit or None)
  return np.asarray(ds.images, np.float32), np.asarray(ds.labels, np.int32)


_RUN_FILE = "run.json"


def _prepare_out_dir(out_dir: pathlib.Path, fingerprint: dict, overwrite: bool) -> None:
  if out_dir.exists() and not out_dir.is_dir():
    raise FileExistsError(f"--out_dir {out_dir} exists and is not a directory")
  if out_dir.is_dir() and any(out_dir.iterdir()):
    if overwrite:
      shutil.rmtree(out_dir)
    else:
      run_file = out_dir / _RUN_FILE
      previous = json.loads(run_file.read_text()) if run_file.is_file() else None
      if previous != fingerprint:
        why = ("was written by a run with different settings" if previous is not None
               else "is not an edge-popup run directory")
        raise FileExistsError(f"--out_dir {out_dir} is not empty and {why}; "
                              "pass --overwrite to replace it")
      logging.info("resuming the run in %s", out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  files_lib.atomic_write_text(out_dir / _RUN_FILE,
                            json.dumps(fingerprint, indent=1, sort_keys=True))


def run_experiment(config, out_dir: str | os.PathLike, *, dataset: str = "fashion_mnist",
                   data_dir: str | None = None, overwrite: bool = False,
                   on_epoch_end: Callable[[str, int], None] | None = None,
                   log_every_seconds: float = 30.0) -> list[dict]:
  """Experiment 2: every (arch, variant) sweep of `config` (lth_jax/configs/edge_popup.py),
  results in `out_dir`:

  results.jsonl (one row per arch x variant x seed x level x epoch, rewritten atomically after
  every epoch), edge_popup_{arch}.png (accuracy vs remaining parameters), masks/{arch}-{variant}/
  (final masks, .npz), checkpoints/ (orbax, per sweep, removed once a sweep is finished unless
  config.keep_checkpoints), done/ (rows of finished sweeps), run.json (settings).

  A non-empty out_dir is refused unless it holds a run with identical settings (then the run
  resumes from its last finished epoch) or `overwrite` is set (then it is emptied first).
  `on_epoch_end(sweep_name, epoch)` is a hook (tests use it to simulate a kill). Progress
  lines (at most every `log_every_seconds`) give the overall percentage and ETA of the whole
  run: all steps of all (arch, variant) sweeps are counted up front, and the steps of sweeps
  or epochs finished by an earlier run count as done.
  """
  validate_config(config)
  out_dir = pathlib.Path(out_dir)
  fingerprint = {"config": json.loads(config.to_json()), "dataset": dataset,
                 "data_dir": None if data_dir is None else str(data_dir)}
  _prepare_out_dir(out_dir, fingerprint, overwrite)
  train_x, train_y = _load_split(dataset, "train", data_dir, int(config.train_limit))
  test_x, test_y = _load_split(dataset, "test", data_dir, int(config.test_limit))
  logging.info("data: %s, %d train / %d test examples", dataset, len(train_y), len(test_y))
  keep = keep_fractions_from_removed(config.removed_fractions)

  done_rows: list[dict] = []
  tasks = [(a, v) for a in config.archs for v in config.variants]
  # Every sweep has the same number of steps (same data, batch size and epochs).
  steps_per_sweep = len(train_y) // int(config.batch_size) * int(config.epochs)
  progress = RunProgress(len(tasks) * steps_per_sweep)
  for ti, (arch, variant) in enumerate(tasks):
    name = f"{arch}-{variant}"
    done_file = out_dir / "done" / f"{name}.json"
    if done_file.is_file():
      done_rows += json.loads(done_file.read_text())
      progress.skip(steps_per_sweep)
      if not config.keep_checkpoints:  # killed between finishing and cleaning up
        shutil.rmtree(out_dir / "checkpoints" / name, ignore_errors=True)
      logging.info("[%d/%d] %s already finished", ti + 1, len(tasks), name)
      continue
    net = EdgePopupNet(arch, variant, hidden=int(config.hidden),
                       redundancy=int(config.redundancy))
    logging.info("[%d/%d] %s: %d FC weights (fc widths %s), %d seed(s) x %d level(s)",
                 ti + 1, len(tasks), name, net.param_count(), net.fc_dims,
                 len(config.seeds), len(keep) if net.is_supermask else 1)
    lr = config.optim.lr_lenet5 if arch == "lenet5" else config.optim.lr_fc

    def epoch_done(epoch, rows, _name=name):
      files_lib.write_jsonl(out_dir / "results.jsonl", done_rows + rows)
      if on_epoch_end is not None:
        on_epoch_end(_name, epoch)

    result = train_sweep(
        net, train_x, train_y, test_x, test_y, keep_fractions=keep, seeds=config.seeds,
        epochs=int(config.epochs), learning_rate=float(lr),
        batch_size=int(config.batch_size), momentum=float(config.optim.momentum),
        weight_decay=float(config.optim.weight_decay), data_seed=int(config.data_seed),
        method=config.topk_method, eval_batch_size=int(config.eval_batch_size),
        checkpoint_dir=out_dir / "checkpoints" / name, on_epoch_end=epoch_done,
        row_extra={"dataset": dataset, "train_examples": len(train_y),
                   "test_examples": len(test_y)},
        log_every_seconds=log_every_seconds, progress=progress)
    if config.export_masks and net.is_supermask:
      export_sweep_masks(result, out_dir / "masks" / name, method=config.topk_method)
    files_lib.atomic_write_text(done_file, json.dumps(result.rows))
    done_rows += result.rows
    files_lib.write_jsonl(out_dir / "results.jsonl", done_rows)
    if not config.keep_checkpoints:
      shutil.rmtree(out_dir / "checkpoints" / name, ignore_errors=True)
    plot_accuracy_vs_params([r for r in done_rows if r["arch"] == arch],
                            out_dir / f"edge_popup_{arch}.png", dataset=dataset)
  files_lib.write_jsonl(out_dir / "results.jsonl", done_rows)
  for arch in config.archs:  # also (re)draws figures of sweeps finished by an earlier run
    plot_accuracy_vs_params([r for r in done_rows if r["arch"] == arch],
                            out_dir / f"edge_popup_{arch}.png", dataset=dataset)
  return done_rows


# ----------------------------------------------------------------------------- plots


_STYLE = {"linear": ("Redundant, linear", "o", "C0"), "relu": ("Redundant, ReLU", "*", "C1"),
          "wide": ("Wide supermask", "^", "C2"), "dense": ("Dense baseline (trained)", "s", "C3")}
_TITLES = {"fc2": "FC2 (784-500-10)", "fc4": "FC4 (784-500-500-500-10)",
           "lenet5": "LeNet5 (FC part)"}


def final_accuracy_table(rows: Sequence[dict]) -> list[dict]:
  """Last-epoch rows aggregated over seeds: one dict per (arch, variant, keep_fraction) with
  mean/min/max test accuracy and the remaining parameters, sorted by arch, variant, keep."""
  last = {}
  for r in rows:
    key = (r["arch"], r["variant"], r["seed"], r["keep_fraction"])
    if key not in last or r["epoch"] > last[key]["epoch"]:
      last[key] = r
  groups: dict = {}
  for (arch, variant, _, keep), r in last.items():
    groups.setdefault((arch, variant, keep), []).append(r)
  table = []
  for (arch, variant, keep), rs in sorted(groups.items(),
                                          key=lambda kv: (kv[0][0], kv[0][1], -kv[0][2])):
    accs = [r["test_accuracy"] for r in rs if r["test_accuracy"] is not None]
    table.append({"arch": arch, "variant": variant, "keep_fraction": keep,
                  "removed_fraction": rs[0]["removed_fraction"],
                  "remaining_params": rs[0]["remaining_params"],
                  "epochs": max(r["epoch"] for r in rs), "seeds": len(rs),
                  "mean": float(np.mean(accs)) if accs else None,
                  "min": float(np.min(accs)) if accs else None,
                  "max": float(np.max(accs)) if accs else None})
  return table


def plot_accuracy_vs_params(rows: Sequence[dict], path: str | os.PathLike, *,
                            dataset: str = "", subtitle: str | None = None) -> pathlib.Path:
  """One figure per architecture, like the paper's: final test accuracy (%) vs remaining FC
  parameters (log x) for the linear, ReLU and wide supermask networks, with the trained
  dense baseline as a point and a dashed line; error bars span the seeds. Written atomically
  (matplotlib Agg). `subtitle` replaces the default second title line (dataset, epochs)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  table = final_accuracy_table(rows)
  archs = sorted({t["arch"] for t in table})
  fig, ax = plt.subplots(figsize=(6.4, 4.8))
  for variant in VARIANTS:
    pts = [t for t in table if t["variant"] == variant and t["mean"] is not None]
    if not pts:
      continue
    label, marker, color = _STYLE[variant]
    x = np.array([t["remaining_params"] for t in pts])
    y = 100 * np.array([t["mean"] for t in pts])
    if variant == "dense":
      ax.axhline(y[0], color=color, ls="--", lw=1.5)
      ax.plot(x, y, marker, color=color, ms=9, label=f"{label}, {x[0]:,} params")
      continue
    yerr = 100 * np.array([[t["mean"] - t["min"], t["max"] - t["mean"]] for t in pts]).T
    ax.errorbar(x, y, yerr=yerr if np.any(yerr) else None, marker=marker, color=color,
                ms=7, lw=1.5, capsize=2, label=label)
  ax.set_xscale("log")
  ax.set_xlabel("remaining FC parameters (log scale)")
  ax.set_ylabel("test accuracy (%)")
  epochs = max((t["epochs"] for t in table), default=0)
  name = ", ".join(_TITLES.get(a, a) for a in archs)
  if subtitle is None:
    n_train = max((r.get("train_examples", 0) for r in rows), default=0)
    subtitle = f"{dataset or 'data'}, {epochs} epoch(s)" + (
        f" on {n_train:,} training examples" if n_train else "")
  ax.set_title(f"Edge-popup: {name}\n{subtitle}", fontsize=10)
  ax.grid(True, which="both", ls=":", alpha=0.6)
  ax.legend(fontsize=8, loc="best")
  fig.tight_layout()
  try:
    return files_lib.save_figure(fig, path, dpi=120, bbox_inches=None)
  finally:
    plt.close(fig)
