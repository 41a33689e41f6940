"""Benchmark: the 14-level edge-popup sweep of FC2 redundant (r = 5, h = 500, ReLU variant).

JAX: all 14 models (one per pruning level of the paper's grid) updated by ONE jitted, vmapped
step (lth_jax.edge_popup.make_sweep_step), top-k by exact bisection (default) and, for
reference, by a stable sort. PyTorch: the reference formulation (repeat the input r times,
elementwise weight1, ReLU, linear weight2, sort-based top-k mask with a straight-through
autograd Function, SGD momentum 0.9 + weight decay 5e-4 on the scores), the 14 models trained
one after another, as the official scripts run them. Same batch size (64), same number of
steps per model, random inputs (the cost does not depend on the data), this machine's CPU.

  python -m benchmarks.bench_edge_popup --steps=30 --out=bench_edge_popup.json

Prints a table and writes JSON (seconds per sweep step, i.e. all 14 models advanced by one
batch, total, and the torch / JAX ratio). torch is imported here only, never by lth_jax.
"""

import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from lth_jax.run import flags as run_flags

from lth_jax import edge_popup as ep
from lth_jax import supermask
from lth_jax.configs.edge_popup import PAPER_REMOVED_FRACTIONS

_STEPS = flags.DEFINE_integer("steps", 30, "Timed steps per model (after warm-up).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed warm-up steps (JAX: includes compile).")
_VARIANT = flags.DEFINE_enum("variant", "relu", ["relu", "linear"], "Redundant variant.")
_OUT = flags.DEFINE_string("out", "bench_edge_popup.json", "JSON output path.")
_SKIP_SORT = flags.DEFINE_bool("skip_jax_sort", False, "Skip the sort-based JAX top-k run.")
_SKIP_TORCH = flags.DEFINE_bool("skip_torch", False, "Skip the PyTorch baseline.")

BATCH, HIDDEN, R, LR = 64, 500, 5, 0.1


def _batches(n, seed=0):
  rng = np.random.default_rng(seed)
  return [(rng.standard_normal((BATCH, 28, 28, 1), np.float32),
           rng.integers(0, 10, BATCH).astype(np.int32)) for _ in range(n)]


def bench_jax(net, keep, batches, warmup, method):
  frozen, trainable = ep.init_sweep(net, (0,), len(keep))
  optimizer = ep.make_optimizer(LR, steps_per_epoch=len(batches), epochs=1)
  opt_state = optimizer.init(trainable)
  step = ep.make_sweep_step(net, optimizer, method=method)
  keep = jnp.asarray(keep, jnp.float32)
  t0 = time.perf_counter()
  for x, y in batches[:warmup]:
    trainable, opt_state, losses = step(frozen, trainable, opt_state, keep, x, y)
  losses.block_until_ready()
  warm = time.perf_counter() - t0
  t0 = time.perf_counter()
  for x, y in batches[warmup:]:
    trainable, opt_state, losses = step(frozen, trainable, opt_state, keep, x, y)
  losses.block_until_ready()
  total = time.perf_counter() - t0
  return {"method": method, "warmup_s": warm, "total_s": total,
          "per_sweep_step_s": total / (len(batches) - warmup)}


def _torch_model(torch, weights, scores, keep, use_relu):
  """Reference formulation in PyTorch layouts: weight1 (r, d_in), weight2 (d_out, d_in r)."""
  nn, F = torch.nn, torch.nn.functional

  class TopK(torch.autograd.Function):
    @staticmethod
    def forward(ctx, magnitude, k):
      mask = torch.zeros_like(magnitude)
      _, order = magnitude.flatten().sort()
      mask.view(-1)[order[magnitude.numel() - k:]] = 1.0
      return mask

    @staticmethod
    def backward(ctx, g):
      return g, None  # straight-through

  class RedLayer(nn.Module):
    def __init__(self, w1, w2, s1, s2):
      super().__init__()
      self.w1 = nn.Parameter(torch.from_numpy(np.array(w1).T.copy()), requires_grad=False)
      self.w2 = nn.Parameter(torch.from_numpy(np.array(w2).T.copy()), requires_grad=False)
      self.s1 = nn.Parameter(torch.from_numpy(np.array(s1).T.copy()))
      self.s2 = nn.Parameter(torch.from_numpy(np.array(s2).T.copy()))
      self.k1 = supermask.kept_count_host(self.w1.numel(), keep)
      self.k2 = supermask.kept_count_host(self.w2.numel(), keep)

    def forward(self, x):
      r = self.w1.shape[0]
      h = x.view(x.shape[0], 1, -1).repeat(1, r, 1)          # (B, r, d_in)
      h = h * (self.w1 * TopK.apply(self.s1.abs(), self.k1))
      if use_relu:
        h = F.relu(h)
      h = h.permute(0, 2, 1).reshape(x.shape[0], -1)          # unit j * r + k
      return F.linear(h, self.w2 * TopK.apply(self.s2.abs(), self.k2))

  class Net(nn.Module):
    def __init__(self):
      super().__init__()
      self.red1 = RedLayer(weights["fc1"]["weight1"], weights["fc1"]["weight2"],
                           scores["fc1"]["weight1"], scores["fc1"]["weight2"])
      self.red2 = RedLayer(weights["fc2"]["weight1"], weights["fc2"]["weight2"],
                           scores["fc2"]["weight1"], scores["fc2"]["weight2"])

    def forward(self, x):
      return self.red2(F.relu(self.red1(x.view(x.shape[0], -1))))

  return Net()


def bench_torch(net, keep_fractions, batches, warmup):
  import torch  # only here: lth_jax never imports torch

  frozen, trainable = ep.init_edge_popup(net, 0)
  per_model, first_losses = [], []
  for keep in keep_fractions:
    model = _torch_model(torch, frozen, trainable, keep, net.variant == "relu")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR,
                          momentum=0.9, weight_decay=5e-4)

    def step(x, y):
      loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)),
                                               torch.from_numpy(y).long())
      opt.zero_grad()
      loss.backward()
      opt.step()
      return float(loss.detach())

    for i, (x, y) in enumerate(batches[:warmup]):
      loss = step(x, y)
      if i == 0:
        first_losses.append(loss)
    t0 = time.perf_counter()
    for x, y in batches[warmup:]:
      step(x, y)
    per_model.append(time.perf_counter() - t0)
  n = len(batches) - warmup
  total = float(sum(per_model))
  return {"total_s": total, "per_sweep_step_s": total / n,
          "per_model_step_s": total / (n * len(keep_fractions)),
          "per_model_total_s": per_model, "first_losses": first_losses,
          "threads": torch.get_num_threads(), "version": torch.__version__}


def main(argv):
  del argv
  net = ep.EdgePopupNet("fc2", _VARIANT.value, hidden=HIDDEN, redundancy=R)
  keep = ep.keep_fractions_from_removed(PAPER_REMOVED_FRACTIONS)
  batches = _batches(_WARMUP.value + _STEPS.value)
  result = {"model": f"FC2 redundant ({net.variant}), r={R}, hidden={HIDDEN}, "
                     f"{net.param_count():,} weights per model",
            "levels": len(keep), "batch_size": BATCH, "steps": _STEPS.value,
            "warmup_steps": _WARMUP.value, "cpu_count": os.cpu_count(),
            "load_average_before": os.getloadavg(), "platform": platform.platform(),
            "jax_version": jax.__version__}
  result["jax_bisect"] = bench_jax(net, keep, batches, _WARMUP.value, "bisect")
  if not _SKIP_SORT.value:
    result["jax_sort"] = bench_jax(net, keep, batches, _WARMUP.value, "sort")
  if not _SKIP_TORCH.value:
    result["torch"] = bench_torch(net, keep, batches, _WARMUP.value)
    # Same initial weights, scores and first batch: the first losses must agree.
    frozen, trainable = ep.init_sweep(net, (0,), len(keep))
    x, y = batches[0]
    logits = jax.vmap(lambda t, k: ep.apply_edge_popup(
        net, jax.tree_util.tree_map(lambda a: a[0], frozen), t, x, k))(
            jax.tree_util.tree_map(lambda a: a[0], trainable), jnp.asarray(keep))
    jax_losses = [float(np.mean(-jax.nn.log_softmax(l)[np.arange(BATCH), y]))
                  for l in logits]
    result["first_loss_max_abs_diff"] = float(np.max(np.abs(
        np.array(jax_losses) - np.array(result["torch"]["first_losses"]))))
    result["ratio_torch_over_jax"] = (result["torch"]["total_s"]
                                      / result["jax_bisect"]["total_s"])
  result["load_average_after"] = os.getloadavg()

  rows = [("JAX, vmapped sweep, bisection top-k", result["jax_bisect"])]
  if "jax_sort" in result:
    rows.append(("JAX, vmapped sweep, sort top-k", result["jax_sort"]))
  if "torch" in result:
    rows.append(("PyTorch, 14 models one after another", result["torch"]))
  print(f"\n{result['model']}; {len(keep)} levels, batch {BATCH}, {_STEPS.value} timed steps")
  print(f"{'implementation':40s} {'s / sweep step':>15s} {'total s':>10s} {'vs JAX':>8s}")
  base = result["jax_bisect"]["total_s"]
  for name, r in rows:
    print(f"{name:40s} {r['per_sweep_step_s']:15.3f} {r['total_s']:10.1f} "
          f"{r['total_s'] / base:7.2f}x")
  if "first_loss_max_abs_diff" in result:
    print(f"first-step loss, max |JAX - torch| over levels: "
          f"{result['first_loss_max_abs_diff']:.2e}")
  print(f"load average before/after: {result['load_average_before']} / "
        f"{result['load_average_after']}")
  with open(_OUT.value, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1)
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  run_flags.run(main)
