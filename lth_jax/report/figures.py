"""Figures of every experiment; the only module that imports matplotlib."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import numpy as np

from lth_jax import files as files_lib
from lth_jax.report import tables

# Edge-popup variants in legend order: (label, marker, colour).
_EDGE_POPUP_STYLE = {
    "linear": ("Redundant, linear", "o", "C0"), "relu": ("Redundant, ReLU", "*", "C1"),
    "wide": ("Wide supermask", "^", "C2"), "dense": ("Dense baseline (trained)", "s", "C3")}
_EDGE_POPUP_TITLES = {"fc2": "FC2 (784-500-10)", "fc4": "FC4 (784-500-500-500-10)",
                      "lenet5": "LeNet5 (FC part)"}


def _pyplot():
  """matplotlib's pyplot on the Agg backend (imported on first use: it costs a second)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_accuracy_vs_params(rows: Sequence[dict], path: str | os.PathLike, *,
                            dataset: str = "", subtitle: str | None = None) -> pathlib.Path:
  """Edge-popup (Experiment 2), like the paper's figures: final test accuracy (%) vs
  remaining FC parameters (log x) for the linear, ReLU and wide supermask networks, with the
  trained dense baseline as a point and a dashed line; error bars span the seeds. Meant for
  the rows of one architecture. Written atomically. `subtitle` replaces the default second
  title line (dataset, epochs)."""
  plt = _pyplot()
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
