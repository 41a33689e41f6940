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


def _panels(num, width=4.2, height=3.6, sharey=True):
  import matplotlib.pyplot as plt
  cols = min(num, 4)
  rows = -(-num // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False,
                           sharey=sharey)
  for ax in list(axes.flat)[num:]:
    ax.axis("off")
  return fig, axes


def plot_error_vs_copies(named_results, path=None, epsilon=None):
  """Mean per-weight error (mean over seeds and weights; solid, log y) and the median sup
  error (dotted) vs copies per input, one panel per target. On a log axis an exponential
  decay is a straight line: its rate per copy (least squares on log error) is in the
  legend; ``single`` gets a ~1/n reference. Returns the figure (saved if ``path``)."""
  if path is not None:
    _agg()
  fig, axes = _panels(len(named_results))
  for ax, (name, per_method) in zip(axes.flat, named_results):
    for m, r in per_method.items():
      order = np.argsort(r.widths)
      w = r.widths[order]
      mean = np.maximum(np.mean(r.mean_weight_error[order], 1), 1e-9)
      label = f"{m}: mean per-weight error"
      if m != "single" and len(w) >= 2:
        rate = np.exp(np.polyfit(w, np.log(mean), 1)[0])
        label += f" (x{rate:.2f}/copy)"
      ax.plot(w, mean, "o-", ms=3, color=_COLORS.get(m), label=label)
      ax.plot(w, np.maximum(np.median(r.sup_error[order], 1), 1e-9), ":", lw=1,
              color=_COLORS.get(m), alpha=0.8, label=f"{m}: sup error (median)")
      if m == "single":  # ~1/n reference through the middle width
        mid = len(w) // 2
        ax.plot(w, mean[mid] * w[mid] / w, "--", color="gray", lw=1, label="~1/n")
    if epsilon is not None:
      ax.axhline(epsilon, color="k", lw=0.8, alpha=0.5)
    ax.set_yscale("log")
    ax.set_title(f"target {name}", fontsize=10)
    ax.set_xlabel("copies per input n (direct: coefficients per weight)")
    ax.grid(alpha=0.3, which="both")
  for ax in axes[:, 0]:
    ax.set_ylabel("error")
  axes.flat[0].legend(fontsize=6, loc="lower left")
  fig.suptitle("per-weight error vs copies: exponential in n (network, direct: straight "
               "lines on a log axis); best single unit ~1/n", fontsize=11)
  return _finish(fig, path)


def plot_success_vs_copies(success, epsilon, path=None):
  """P(sup error <= eps) over seeds vs copies per input with 95% Wilson bands, one panel
  per target: every method at ``epsilon`` (solid), ``network`` also at the other epsilons
  of ``success`` (thin). ``success``: ``tables.success_rows``. Returns the figure."""
  if path is not None:
    _agg()
  names = list(dict.fromkeys(s["target"] for s in success))
  fig, axes = _panels(len(names), sharey=True)
  epsilons = sorted({s["epsilon"] for s in success})
  for ax, name in zip(axes.flat, names):
    mine = [s for s in success if s["target"] == name]
    for m in dict.fromkeys(s["method"] for s in mine):
      for eps in epsilons:
        pts = sorted((s["width"], s["success"], s["success_low"], s["success_high"])
                     for s in mine if s["method"] == m and s["epsilon"] == eps)
        if not pts or (eps != epsilon and m != "network"):
          continue
        w, p, lo, hi = map(np.asarray, zip(*pts))
        main = eps == epsilon
        ax.plot(w, p, "o-" if main else "-", ms=3, lw=1.5 if main else 0.8,
                alpha=1.0 if main else 0.6, color=_COLORS.get(m),
                label=f"{m}, eps={eps:g}" if main else f"{m}, eps={eps:g} (thin)")
        if main:
          ax.fill_between(w, lo, hi, color=_COLORS.get(m), alpha=0.15, lw=0)
    for level in tables.LEVELS:
      ax.axhline(level, color="k", lw=0.6, ls=":", alpha=0.6)
    sizes = mine[0]["layer_sizes"]
    ax.set_title(f"{name} (sizes {sizes}, {mine[0]['seeds']} seeds)", fontsize=9)
    ax.set_xlabel("copies per input n (direct: coefficients per weight)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
  for ax in axes[:, 0]:
    ax.set_ylabel(f"P(sup error <= eps) over seeds")
  axes.flat[0].legend(fontsize=6, loc="lower right")
  fig.suptitle(f"success probability vs copies (bands: 95% Wilson; thick: eps = {epsilon:g})",
               fontsize=11)
  return _finish(fig, path)


_FAMILY_MARKERS = {"random": "o", "perm": "s", "permutation": "s"}


def plot_log_law(copies, fits, path=None, level: float = 0.9):
  """The log law: copies needed for success >= ``level`` against ``log2(d l / eps)``, a
  point for every (target, epsilon) (marker: target family, filled: network, x: single),
  censored points as open triangles at the grid's max width, the fitted line(s)
  ``a + C log2(d l / eps)`` with C's interval, and the counting lower bound per input.
  ``copies``: ``tables.copies_rows``; ``fits``: ``tables.log_law_fits``."""
  if path is not None:
    _agg()
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(9.0, 5.0))
  field = f"copies_{level:g}"
  xs = [c["log_term"] for c in copies]
  if not xs:
    return fig
  for method, color in (("network", _COLORS["network"]), ("single", _COLORS["single"])):
    for fam in sorted({c["family"] for c in copies}):
      pts = [c for c in copies if c["method"] == method and c["family"] == fam]
      hit = [(c["log_term"], c[field]) for c in pts if c[field] is not None]
      cen = [(c["log_term"], c["max_width"]) for c in pts if c[field] is None]
      marker = _FAMILY_MARKERS.get(fam, "D") if method == "network" else "x"
      if hit:
        ax.scatter(*zip(*hit), marker=marker, color=color, s=28, zorder=3,
                   label=f"{method}, {fam} targets")
      if cen:
        ax.scatter(*zip(*cen), marker="^", facecolor="none", edgecolor=color, s=40,
                   label=f"{method}, {fam}: not reached (at max width)")
  grid = np.linspace(min(xs), max(xs), 20)
  for f in fits:
    if f["level"] != level or f["fit"] is None or f["method"] != "network":
      continue
    fit = f["fit"]
    style = "-" if f["group"] == "all" else "--"
    ax.plot(grid, fit["intercept"] + fit["slope"] * grid, style, color="k",
            lw=1.5 if f["group"] == "all" else 0.8,
            label=(f"fit ({f['group']}): C = {fit['slope']:.2f} [{fit['slope_low']:.2f}, "
                   f"{fit['slope_high']:.2f}], R² = {fit['r_squared']:.2f}"))
  lb = sorted({(c["log_term"], c["lower_bound_per_input"]) for c in copies})
  ax.scatter(*zip(*lb), marker="_", color="gray", s=60, label="counting lower bound per input")
  mal = [c["malach_width_factor"] for c in copies]
  ax.plot([], [], " ", label=f"Malach et al. width factor d^4 l^2: {min(mal):.3g} .. "
          f"{max(mal):.3g} (off scale)")
  ax.set_xlabel("log2(d l / eps)   (d: target width, l: target depth)")
  ax.set_ylabel(f"copies per input for P(sup error <= eps) >= {level:g}")
  ax.grid(alpha=0.3)
  ax.set_ylim(bottom=0)
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  ax.set_title("copies needed vs log2(d l / eps): every (d, l, eps) of the sweep, "
               "and the least-squares line", fontsize=9)
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
