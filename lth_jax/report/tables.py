"""Text tables of every experiment: the sweep's grid and summary (copies needed beside the
theory), the Lueker coverage check, Experiment 1's table.

Inputs are results (``named_results``: ``[(target name, {method: sweep.SweepResult})]``) and
rows; outputs are plain strings and JSON-able dicts. No file is written here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lth_jax import lueker
from lth_jax import sweep as sweep_lib
from lth_jax import theory


def summary_rows(named_results, epsilon) -> list[dict]:
  """Per (target, method): copies needed (median over seeds) beside the theory numbers.

  Parameter counts: ``params_needed_median`` is the measured random object's size
  (``SweepResult.params_random``) at each seed's copies needed, median over seeds (None if
  most seeds never reached epsilon); ``theory_params`` is ``theory.construction_size``'s at
  the theory copies; ``lower_bound_params`` the counting bound P summed over layers.
  """
  out = []
  for name, per_method in named_results:
    for method, r in per_method.items():
      sizes = r.layer_sizes
      needed = sweep_lib.copies_needed(r, epsilon)
      med = float(np.median(needed))
      const = theory.C_DIRECT if method == "direct" else theory.C_NETWORK
      cs = theory.construction_size(sizes, epsilon, const, method)
      lower = [theory.counting_lower_bound(a, b, epsilon) for a, b in zip(sizes[:-1], sizes[1:])]
      # needed[s] is a grid width (or inf): look its measured parameter count up.
      by_width = dict(zip((int(w) for w in r.widths), (int(p) for p in r.params_random)))
      params_needed = float(np.median([by_width[int(n)] if math.isfinite(n) else math.inf
                                       for n in needed]))
      out.append(dict(
          target=name, method=method, layer_sizes=list(sizes), epsilon=epsilon,
          copies_needed_median=med if math.isfinite(med) else None,
          copies_needed_per_seed=[float(x) if math.isfinite(x) else None for x in needed],
          max_width=int(max(r.widths)),
          params_needed_median=params_needed if math.isfinite(params_needed) else None,
          max_params=int(max(r.params_random)),
          theory_copies=list(cs.copies), theory_constant=const, theory_params=int(cs.params),
          fitted_constant=(med / max(theory.log_term(sizes, epsilon))
                           if math.isfinite(med) else None),
          lower_bound_per_input=max(lb.per_input for lb in lower),
          lower_bound_width=max(lb.width for lb in lower),
          lower_bound_params=sum(lb.params for lb in lower),
          malach_width_factor=theory.malach_width_factor(sizes),
          measured_width_factor=(sweep_lib.width_factor(sizes, int(med), method)
                                 if math.isfinite(med) else None)))
  return out


def format_grid_table(named_results, epsilon) -> str:
  """One block per target: per width, each method's median (over seeds) sup error, max
  per-weight error and fraction of weights within epsilon."""
  lines = []
  for name, per_method in named_results:
    methods = list(per_method)
    widths = sorted({int(w) for r in per_method.values() for w in r.widths})
    any_r = next(iter(per_method.values()))
    head = f"{'width':>5}"
    for m in methods:
      head += f" | {m + ' sup':>12} {'max|w|':>9} {'<=eps':>5}"
    acc = any(r.accuracy is not None for r in per_method.values())
    lines.append(f"target {name} (sizes {list(any_r.layer_sizes)}, {any_r.num_seeds} seeds, "
                 f"medians over seeds; <=eps: fraction of weights within {epsilon:g})"
                 + (f", target accuracy {any_r.target_accuracy:.4f}" if acc else ""))
    lines.append(head)
    for w in widths:
      line = f"{w:>5}"
      for m in methods:
        r = per_method[m]
        idx = np.nonzero(r.widths == w)[0]
        if not idx.size:
          line += f" | {'':>12} {'':>9} {'':>5}"
          continue
        i = idx[0]
        line += (f" | {np.median(r.sup_error[i]):>12.3e} {np.median(r.max_weight_error[i]):>9.2e}"
                 f" {np.median(r.fraction_within_epsilon[i]):>5.2f}")
        if r.accuracy is not None:
          line += f" acc {np.median(r.accuracy[i]):.4f}"
      lines.append(line)
    lines.append("")
  return "\n".join(lines)


def format_summary_table(summary) -> str:
  """Copies needed to reach ``sup error <= epsilon`` and the random object's parameters at
  them, beside the theory's numbers (construction size, counting lower bound, Malach)."""
  def fmt(x, spec=".1f"):
    return "-" if x is None else format(x, spec)

  def needed(value, limit, spec):  # '>W': not reached within the grid
    return fmt(value, spec) if value is not None else f">{limit}"

  copies = f"{'needed':>7} {'theory':>6} {'C':>4} {'C fit':>5} {'LB':>5}"
  params = f"{'needed':>8} {'theory':>8} {'LB P':>7}"
  lines = [f"copies per input needed for sup_(|x|<=1) |f(x) - g(x)| <= eps "
           f"(median over seeds; '>W': not reached within the grid's max width W)",
           f"{'':<27} {'copies per input n':^{len(copies)}} | "
           f"{'params':^{len(params)}} |",
           f"{'target':<18} {'method':<8} {copies} | {params} | {'LB width':>8} {'Malach':>8}"]
  for row in summary:
    lines.append(
        f"{row['target']:<18} {row['method']:<8} "
        f"{needed(row['copies_needed_median'], row['max_width'], '.0f'):>7} "
        f"{max(row['theory_copies']):>6d} {row['theory_constant']:>4g} "
        f"{fmt(row['fitted_constant'], '.2f'):>5} {row['lower_bound_per_input']:>5.2f} | "
        f"{needed(row['params_needed_median'], row['max_params'], '.0f'):>8} "
        f"{row['theory_params']:>8d} {row['lower_bound_params']:>7.0f} | "
        f"{row['lower_bound_width']:>8.1f} {row['malach_width_factor']:>8.3g}")
  lines.append(
      "copies: theory = ceil(C log2(d_in d_out l / eps)) (lth_jax.theory; C fit = needed / "
      "log2(...)); LB = counting lower bound per input (LB width / d_in)\n"
      "params: random network (direct: coefficients) at the copies needed (measured) and at "
      "the theory copies; LB P = d_in d_out log2(1/(2 eps)) summed over layers\n"
      "LB width = P / (d_in + d_out) hidden units; Malach = width factor d^4 l^2 (constant "
      "1, no eps term)")
  return "\n".join(lines)


def format_lueker_table(coverage) -> str:
  """Coverage per (kind, n) beside the SPEC's reference values."""
  lines = [f"{'kind':<9} {'n':>3} {'covered':>8} {'(upper)':>8} {'reference':>9} {'trials':>6}"]
  for c in coverage:
    ref = lueker.REFERENCE.get(c.kind, {}).get(c.n)
    lines.append(f"{c.kind:<9} {c.n:>3} {c.covered:>8.2f} {c.covered_upper:>8.2f} "
                 f"{'-' if ref is None else format(ref, '.2f'):>9} {c.trials:>6}")


# Experiment 1.


def _fmt_int(x) -> str:
  return f"{int(x):,}" if x is not None else "-"


def _experiment1_paper_line(p: dict) -> str:
  return (f"{'paper':<8} {'MIP (MNIST)':<12} {21:>11} {_fmt_int(p['initial_params']):>13} "
          f"{_fmt_int(p['remaining_params']):>12} {p['remaining_ratio']:>6.2f}x "
          f"{p['fraction_within_eps']:>10.6f} {0:>7d} {'<=1e-2':>9} "
          f"{100 * p['target_accuracy']:>9.2f}% {'(unverif.)':>10} {p['solve_seconds']:>8.0f} "
          f"{'-':>7} {'-':>8}")


def format_experiment1_table(rows: Sequence[dict]) -> str:
  """Experiment 1's table (one line per variant x objective row), then the paper's own
  numbers (a direct row's ``"paper"`` entry, set for the paper's FC2) and one line per
  network row describing its random network."""
  head = (f"{'variant':<8} {'objective':<12} {'copies':>11} {'initial':>13} {'remaining':>12} "
          f"{'ratio':>7} {'within eps':>10} {'misses':>7} {'max err':>9} {'target acc':>10} "
          f"{'ticket acc':>10} {'solve s':>8} {'eval s':>7} {'peak MB':>8}")
  lines = [head, "-" * len(head)]
  for r in rows:
    copies = r["copies"] if isinstance(r["copies"], int) else "/".join(map(str, r["copies"]))
    lines.append(
        f"{r['variant']:<8} {r['objective']:<12} {copies:>11} {_fmt_int(r['initial_params']):>13} "
        f"{_fmt_int(r['remaining_params']):>12} {r['remaining_ratio']:>6.2f}x "
        f"{r['fraction_within_eps']:>10.6f} {r['weights_missing_eps']:>7d} "
        f"{r['max_weight_error']:>9.2e} {100 * r['target_accuracy']:>9.2f}% "
        f"{100 * r['ticket_accuracy']:>9.2f}% {r['solve_seconds']:>8.1f} "
        f"{r['eval_seconds']:>7.1f} {r['peak_rss_mb']:>8.0f}")
  paper = [r["paper"] for r in rows if r["variant"] == "direct" and r.get("paper")]
  if paper:
    lines.append(_experiment1_paper_line(paper[0]))
  for r in rows:
    if r["variant"] == "network":
      diff = r["dense_check_rel_diff"]
      lines.append(
          f"network/{r['objective']}: random network {_fmt_int(r['initial_params'])} params, "
          f"hidden widths {r['hidden_widths']}, copies/layer {r['copies']}, max_half "
          f"{r['max_half']}, structured-vs-dense rel. diff "
          f"{'-' if diff is None else format(diff, '.1e')}")
  return "\n".join(lines)
