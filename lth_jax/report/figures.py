"""The experiments' figures; the only module of lth_jax that imports matplotlib (inside
each function, so importing this module stays cheap).

Every function returns the figure (or Axes) and, given a ``path``, saves it as PNG
atomically (``files.save_figure``) with the non-interactive Agg backend.
"""

from __future__ import annotations

import collections
import math
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from lth_jax import files as files_lib
from lth_jax import lueker
from lth_jax import theory
from lth_jax.report import tables

_COLORS = {"network": "tab:blue", "direct": "tab:green", "single": "tab:red"}


def _finish(fig, path, tight: bool = True):
  """Lays ``fig`` out, saves it to ``path`` if given; returns it."""
  if tight:
    fig.tight_layout()
  if path is not None:
    files_lib.save_figure(fig, path)
  return fig


def _agg() -> None:
  """The non-interactive backend: a figure that is saved is never shown."""
  import matplotlib
  matplotlib.use("Agg")


def plot_error_vs_copies(named_results, path=None, epsilon=None):
  """Sup error (median over seeds, band: min-max) vs copies per input, log y, one panel per
  target; dashed: the max per-weight error. Returns the figure (saved if ``path``)."""
  if path is not None:
    _agg()
  import matplotlib.pyplot as plt
  num = len(named_results)
  cols = min(num, 4)
  rows = -(-num // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False,
                           sharey=True)
  colors = _COLORS
  for ax, (name, per_method) in zip(axes.flat, named_results):
    for m, r in per_method.items():
      order = np.argsort(r.widths)
      w = r.widths[order]
      sup = np.maximum(r.sup_error[order], 1e-9)
      ax.plot(w, np.median(sup, 1), "o-", ms=3, color=colors.get(m), label=f"{m}: sup error")
      ax.fill_between(w, sup.min(1), sup.max(1), color=colors.get(m), alpha=0.15, lw=0)
      ax.plot(w, np.maximum(np.median(r.max_weight_error[order], 1), 1e-9), "--", lw=1,
              color=colors.get(m), alpha=0.8, label=f"{m}: max per-weight error")
      if m == "single":  # ~1/n reference through the median at the middle width
        mid = len(w) // 2
        ref = np.median(sup, 1)[mid] * w[mid] / w
        ax.plot(w, ref, ":", color="gray", lw=1, label="~1/n")
    if epsilon is not None:
      ax.axhline(epsilon, color="k", lw=0.8, alpha=0.5)
    ax.set_yscale("log")
    ax.set_title(f"target {name}", fontsize=10)
    ax.set_xlabel("copies per input n (direct: coefficients per weight)")
    ax.grid(alpha=0.3, which="both")
  for ax in axes[:, 0]:
    ax.set_ylabel("error (median over seeds)")
  for ax in list(axes.flat)[num:]:
    ax.axis("off")
  axes.flat[0].legend(fontsize=7, loc="lower left")
  fig.suptitle("SubsetSum tickets: error falls exponentially in n (network, direct); "
               "best single unit: ~1/n", fontsize=11)
  return _finish(fig, path)


def plot_overparam_vs_d(named_results, summary, epsilon, path=None):
  """Copies per input needed for sup error <= epsilon vs target width d (log2 x-axis):
  measured (median over seeds, dots per seed), the construction's ``C log2(d^2 l / eps)``,
  and the counting lower bound per input. Returns the figure (saved if ``path``)."""
  if path is not None:
    _agg()
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(9.0, 4.6))
  colors = _COLORS
  shift = {"network": 0.96, "direct": 1.0, "single": 1.04}  # keep markers apart
  by_method = collections.defaultdict(list)
  for row in summary:
    sizes = row["layer_sizes"]
    by_method[row["method"]].append((max(sizes), len(sizes) - 1, row))
  all_d = sorted({d for v in by_method.values() for d, _, _ in v})
  if not all_d:
    return fig
  top = 0
  for m, items in by_method.items():
    items.sort(key=lambda x: x[0])
    ds, meds, censored = [], [], []
    for d, _, row in items:
      seeds = [s for s in row["copies_needed_per_seed"] if s is not None]
      ax.scatter([d] * len(seeds), seeds, s=8, color=colors.get(m), alpha=0.35)
      if row["copies_needed_median"] is None:
        censored.append((d, row["max_width"]))
      else:
        ds.append(d)
        meds.append(row["copies_needed_median"])
      top = max(top, row["max_width"])
    if ds:
      ax.plot(ds, meds, "o-", color=colors.get(m), label=f"{m}: measured (median)")
    if censored:
      ax.plot([c[0] * shift.get(m, 1.0) for c in censored], [c[1] + 1 for c in censored], "^",
              ms=9,
              color=colors.get(m), mfc="none", label=f"{m}: not reached within the grid")
  dd = np.geomspace(min(all_d), max(all_d), 50)
  for const, label, style in ((theory.C_NETWORK, "network", "-"),
                              (theory.C_DIRECT, "direct", "--")):
    curve = const * np.log2(dd * dd / epsilon)
    ax.plot(dd, curve, style, color=colors.get(label), lw=1, alpha=0.7,
            label=f"construction C log2(d^2/eps), C={const:g} ({label}, lth_jax.theory)")
    if label in by_method:
      top = max(top, float(curve.max()))
  lb = theory.counting_lower_bound(2, 2, epsilon).per_input
  ax.axhline(lb, color="k", ls=":", lw=1, label=f"counting lower bound: {lb:.2f} per input")
  mal = theory.malach_width_factor((min(all_d), min(all_d)))
  ax.plot([], [], " ", label=f"Malach et al. factor d^4 l^2: {mal:.0f} .. "
          f"{theory.malach_width_factor((max(all_d), max(all_d))):.2g} (off scale)")
  ax.set_xscale("log", base=2)
  ax.set_xticks(all_d, [str(d) for d in all_d])
  ax.set_xlabel("target width d (d x d layer)")
  ax.set_ylabel(f"copies per input for sup error <= {epsilon:g}")
  ax.set_ylim(0, top * 1.12)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  ax.set_title("copies per input needed vs target width d: measured, and the construction's "
               "C log2(d^2/eps)", fontsize=9)
  return _finish(fig, path)


def plot_coverage(curves: dict[str, Sequence[lueker.Coverage]], constants: dict[str, float],
                  ax=None, reference: bool = True):
  """Coverage vs n per kind, the reference values, and ``n = C log2(1/eps)`` lines.

  Args:
    curves: kind -> list of ``Coverage`` (same epsilon).
    constants: kind -> C (the vertical line ``n = C log2(1/epsilon)``).
  Returns:
    the matplotlib Axes.
  """
  import matplotlib.pyplot as plt
  if ax is None:
    _, ax = plt.subplots(figsize=(6.4, 4.2))
  colors = {"uniform": "tab:blue", "products": "tab:orange"}
  labels = {"uniform": "U[-1,1]", "products": "v*u over the u>0 copies (one sign half)"}
  eps = None
  for kind, curve in curves.items():
    if not curve:
      continue
    eps = curve[0].epsilon
    ns = [c.n for c in curve]
    lo = np.asarray([c.covered for c in curve])
    hi = np.asarray([c.covered_upper for c in curve])
    ax.plot(ns, hi, "o-", color=colors.get(kind), label=f"{labels.get(kind, kind)} "
            f"({curve[0].trials} trials)")
    if np.any(hi > lo):
      ax.fill_between(ns, lo, hi, color=colors.get(kind), alpha=0.25, lw=0)
    if reference and kind in lueker.REFERENCE:
      ref = lueker.REFERENCE[kind]
      ax.plot(list(ref), list(ref.values()), "x", ms=9, mew=2, color=colors.get(kind),
              label=f"{labels.get(kind, kind)}: SPEC reference")
    if kind in constants and eps:
      n_line = constants[kind] * math.log2(1 / eps)
      ax.axvline(n_line, ls="--", color=colors.get(kind), alpha=0.7)
      ax.text(n_line, 0.5, f" C={constants[kind]:g}: n={n_line:.1f} ", color=colors.get(kind),
              rotation=90, va="bottom", ha="right", fontsize=8)
  if eps:
    scale = math.log2(1 / eps)
    top = ax.secondary_xaxis("top", functions=(lambda n: n / scale, lambda c: c * scale))
    top.set_xlabel(f"C = n / log2(1/eps)  (eps = {eps:g})")
  ax.set_xlabel("n (copies; uniform: coefficients)")
  ax.set_ylabel(f"P(every z in [-1,1] within {eps:g} of a subset sum)" if eps else "coverage")
  ax.set_ylim(-0.02, 1.02)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
  return ax


def plot_lueker_check(coverage: Sequence[lueker.Coverage], epsilon: float, path=None):
  """The sweep's Lueker figure: ``plot_coverage`` of every kind with the theory's
  constants, titled with ``epsilon``. Returns the figure (saved if ``path``)."""
  if path is not None:
    _agg()
  curves = {k: [c for c in coverage if c.kind == k] for k in lueker.KINDS}
  ax = plot_coverage(curves, {"uniform": theory.C_LUEKER_UNIFORM,
                              "products": theory.C_LUEKER_HALF})
  ax.set_title(f"Lueker check: every z in [-1,1] within {epsilon:g}", fontsize=10)
  return _finish(ax.figure, path, tight=False)


def close(fig) -> None:
  """Frees a figure's memory (drivers save many)."""
  import matplotlib.pyplot as plt
  plt.close(fig)


# Experiment 2 (edge-popup).

# Edge-popup variants in legend order: (label, marker, colour).
_EDGE_POPUP_STYLE = {
    "linear": ("Redundant, linear", "o", "C0"), "relu": ("Redundant, ReLU", "*", "C1"),
    "wide": ("Wide supermask", "^", "C2"), "dense": ("Dense baseline (trained)", "s", "C3")}
_EDGE_POPUP_TITLES = {"fc2": "FC2 (784-500-10)", "fc4": "FC4 (784-500-500-500-10)",
                      "lenet5": "LeNet5 (FC part)"}


def plot_accuracy_vs_params(rows: Sequence[dict], path: str | os.PathLike, *,
                            dataset: str = "", subtitle: str | None = None) -> pathlib.Path:
  """Edge-popup (Experiment 2), like the paper's figures: final test accuracy (%) vs
  remaining FC parameters (log x) for the linear, ReLU and wide supermask networks, with the
  trained dense baseline as a point and a dashed line; error bars span the seeds. Meant for
  the rows of one architecture. Written atomically. `subtitle` replaces the default second
  title line (dataset, epochs)."""
  _agg()
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  table = tables.final_accuracy_table(rows)
  archs = sorted({t["arch"] for t in table})
  fig, ax = plt.subplots(figsize=(6.4, 4.8))
  for variant, (label, marker, color) in _EDGE_POPUP_STYLE.items():
    pts = [t for t in table if t["variant"] == variant and t["mean"] is not None]
    if not pts:
      continue
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
  name = ", ".join(_EDGE_POPUP_TITLES.get(a, a) for a in archs)
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
