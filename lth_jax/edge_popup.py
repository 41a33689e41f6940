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
  the paper's grid (`PAPER_REMOVED_FRACTIONS` in `lth_jax.configs.edge_popup`) lists the
  fraction REMOVED, keep = 1 - removed (`keep_fractions_from_removed`).
  Parameter counts cover the FC layers only (convolutions are never pruned), as in the paper.

A sweep trains every (seed, keep_fraction) model of one (architecture, variant) at once: the
state carries leading axes (S seeds, L levels), keep_fraction is a traced (L,) array, and a
single jitted step (`make_sweep_step`) updates all S * L models; `make_sweep_eval` tests them
all. Frozen weights depend on the seed only and are stored once per seed.

Programs stage: the training loop with checkpoints and resume, mask export and the
experiment driver are in `lth_jax.run.edge_popup`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lth_jax import supermask
from lth_jax.data import NUM_CLASSES

ARCHS = ("fc2", "fc4", "lenet5")
VARIANTS = ("linear", "relu", "wide", "dense")
SUPERMASK_VARIANTS = ("linear", "relu", "wide")
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
