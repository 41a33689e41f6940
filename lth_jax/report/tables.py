"""Text tables of every experiment."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def final_accuracy_table(rows: Sequence[dict]) -> list[dict]:
  """Edge-popup (Experiment 2): last-epoch rows aggregated over seeds, one dict per
  (arch, variant, keep_fraction) with mean/min/max test accuracy and the remaining
  parameters, sorted by arch, variant and decreasing keep_fraction."""
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
