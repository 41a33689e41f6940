"""Text tables of every experiment: the sweep's grid and summary (copies needed beside the
theory), its success probabilities and log-law fit, the Lueker coverage check, Experiment
1's table.

Inputs are results (``named_results``: ``[(target name, {method: sweep.SweepResult})]``) and
rows; outputs are plain strings and JSON-able dicts. No file is written here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lth_jax import constructions
from lth_jax import lueker
from lth_jax import stats
from lth_jax import sweep as sweep_lib
from lth_jax import theory

# Success levels at which copies needed are read off the success curves.
LEVELS = (0.5, 0.9)


def target_family(name: str) -> str:
  """The family of a sweep target from its name (``"random_4x4"`` -> ``"random"``)."""
  return name.split("_", 1)[0]


def success_rows(named_results, epsilons, confidence: float = 0.95) -> list[dict]:
  """Per (target, method, epsilon, width): the fraction of seeds with sup error <= epsilon
  and its Wilson interval, beside the per-weight error statistics (means over seeds).

  The solve does not depend on epsilon (min-error objective), so every epsilon is read
  from the same grid's sup errors."""
  out = []
  for name, per_method in named_results:
    for method, r in per_method.items():
      order = np.argsort(r.widths)
      for eps in epsilons:
        p = stats.success_fraction(r.sup_error[order], eps, confidence)
        for i, j in enumerate(order):
          out.append(dict(
              target=name, family=target_family(name), method=method,
              layer_sizes=list(r.layer_sizes), epsilon=float(eps), width=int(r.widths[j]),
              seeds=int(p.trials[i]), successes=int(round(p.fraction[i] * p.trials[i])),
              success=float(p.fraction[i]), success_low=float(p.low[i]),
              success_high=float(p.high[i]),
              mean_weight_error=float(np.mean(r.mean_weight_error[j])),
              max_weight_error_median=float(np.median(r.max_weight_error[j])),
              sup_error_median=float(np.median(r.sup_error[j]))))
  return out


def copies_rows(named_results, epsilons, levels=LEVELS) -> list[dict]:
  """Per (target, method, epsilon): the copies needed for success >= each level
  (``stats.copies_needed``; None: not reached within the grid, i.e. censored at
  ``max_width``), beside ``log2(d l / eps)`` (``d``: the widest layer, ``l``: target
  layers), the counting lower bound per input and Malach et al.'s width factor."""
  out = []
  for name, per_method in named_results:
    for method, r in per_method.items():
      order = np.argsort(r.widths)
      widths = np.asarray(r.widths)[order]
      sizes = tuple(r.layer_sizes)
      d, depth = max(sizes), len(sizes) - 1
      for eps in epsilons:
        frac = stats.success_fraction(r.sup_error[order], eps).fraction
        needed = {}
        for level in levels:
          n = stats.copies_needed(widths, frac, level)
          needed[f"copies_{level:g}"] = n if math.isfinite(n) else None
        lower = [theory.counting_lower_bound(a, b, eps) for a, b in zip(sizes[:-1], sizes[1:])]
        out.append(dict(
            target=name, family=target_family(name), method=method, layer_sizes=list(sizes),
            d=d, depth=depth, epsilon=float(eps), log_term=math.log2(d * depth / eps),
            max_width=int(widths[-1]), seeds=int(r.num_seeds), **needed,
            lower_bound_per_input=max(lb.per_input for lb in lower),
            malach_width_factor=theory.malach_width_factor(sizes)))
  return out


def log_law_fits(copies, levels=LEVELS, method: str = "network") -> list[dict]:
  """Least-squares fits ``copies ≈ a + C log2(d l / eps)`` (``stats.fit_log_law``) of
  ``method``'s copies needed, per level, over all targets and per target family.
  Censored points (not reached within the grid) are left out and counted in ``dropped``;
  ``fit`` is None with fewer than 3 points or a single log term."""
  out = []
  rows = [c for c in copies if c["method"] == method]
  groups = [("all", rows)] + [(f, [c for c in rows if c["family"] == f])
                              for f in sorted({c["family"] for c in rows})]
  for level in levels:
    field = f"copies_{level:g}"
    for group, members in groups:
      pts = [(c["log_term"], c[field]) for c in members if c[field] is not None]
      fit = None
      if len(pts) >= 3 and len({x for x, _ in pts}) > 1:
        fit = stats.fit_log_law(*map(np.asarray, zip(*pts)))._asdict()
      out.append(dict(method=method, level=level, group=group, points=len(pts),
                      dropped=len(members) - len(pts), fit=fit))
  return out


def format_success_table(success, epsilon) -> str:
  """Per target: success fraction at ``epsilon`` with its 95% Wilson interval per width and
  method, and the mean per-weight error (mean over seeds)."""
  lines = []
  rows = [s for s in success if s["epsilon"] == epsilon]
  for name in dict.fromkeys(s["target"] for s in rows):
    mine = [s for s in rows if s["target"] == name]
    methods = list(dict.fromkeys(s["method"] for s in mine))
    lines.append(f"target {name} (sizes {mine[0]['layer_sizes']}, {mine[0]['seeds']} seeds): "
                 f"P(sup error <= {epsilon:g}) [95% Wilson interval], mean per-weight error")
    lines.append(f"{'width':>5}" + "".join(f" | {m + ' P(sup<=eps)':>22} {'mean|w|':>8}"
                                           for m in methods))
    for w in sorted({s["width"] for s in mine}):
      line = f"{w:>5}"
      for m in methods:
        hit = [s for s in mine if s["method"] == m and s["width"] == w]
        if not hit:
          line += f" | {'':>22} {'':>8}"
          continue
        s = hit[0]
        cell = f"{s['success']:.2f} [{s['success_low']:.2f},{s['success_high']:.2f}]"
        line += f" | {cell:>22} {s['mean_weight_error']:>8.1e}"
      lines.append(line)
    lines.append("")
  return "\n".join(lines)


def _fmt_copies(row, level):
  value = row.get(f"copies_{level:g}")
  return f">{row['max_width']}" if value is None else f"{value:.0f}"


def format_log_law_table(copies, fits) -> str:
  """Copies needed for success >= each level at every (target, epsilon), network beside the
  single and direct baselines and the theory's numbers; then the log-law fits."""
  by = {(c["target"], c["method"], c["epsilon"]): c for c in copies}
  # the baselines, and other constructions (e.g. lplus1) when the sweep ran them
  present = {c["method"] for c in copies}
  methods = ("network", "single", "direct") + tuple(
      m for m in constructions.names() if m in present and m not in ("network", "single",
                                                                      "direct"))
  head = (f"{'target':<18} {'d':>3} {'l':>2} {'eps':>6} {'log2(dl/e)':>10} | "
          + " ".join(f"{m[:7] + '@' + format(v, 'g'):>10}"
                     for m in methods for v in LEVELS)
          + f" | {'LB/input':>8} {'Malach':>8}")
  lines = ["copies per input needed for P(sup error <= eps) >= level (success over seeds; "
           "'>W': not reached within the grid's max width W)", head]
  # one row per (target, eps) whichever methods ran (a sweep of one construction too)
  rows = {}
  for c in copies:
    rows.setdefault((c["target"], c["epsilon"]), c)
  for c in rows.values():
    cells = []
    for m in methods:
      other = by.get((c["target"], m, c["epsilon"]))
      cells += [f"{(_fmt_copies(other, v) if other else '-'):>10}" for v in LEVELS]
    lines.append(f"{c['target']:<18} {c['d']:>3} {c['depth']:>2} {c['epsilon']:>6g} "
                 f"{c['log_term']:>10.2f} | {' '.join(cells)} | "
                 f"{c['lower_bound_per_input']:>8.2f} {c['malach_width_factor']:>8.3g}")
  lines.append("LB/input: counting lower bound, hidden units per input (d/2 log2(1/(2 eps)) / d); "
               "Malach: width factor d^4 l^2 (constant 1, no eps term); single: best single "
               "unit per sign half (error ~1/n: copies polynomial in 1/eps)")
  lines.append("fit copies ≈ a + C log2(d l / eps) (least squares; 95% t interval of C; "
               "censored points left out):")
  for f in fits:
    if f["fit"] is None:
      lines.append(f"  {f['method']} level {f['level']:g} {f['group']:<12}: not enough "
                   f"points ({f['points']} reached, {f['dropped']} censored)")
      continue
    fit = f["fit"]
    lines.append(f"  {f['method']} level {f['level']:g} {f['group']:<12}: C = "
                 f"{fit['slope']:.2f} [{fit['slope_low']:.2f}, {fit['slope_high']:.2f}], "
                 f"a = {fit['intercept']:.1f}, R^2 = {fit['r_squared']:.2f} "
                 f"({f['points']} points, {f['dropped']} censored)")
  return "\n".join(lines)


def summary_rows(named_results, epsilon) -> list[dict]:
  """Per (target, method): copies needed for success >= 0.5 and >= 0.9 over seeds
  (``copies_0.5``, ``copies_0.9``; None: not reached) and the median over seeds of each
  seed's copies needed, beside the theory numbers.

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
      col = {int(w): i for i, w in enumerate(r.widths)}
      kept_needed = float(np.median([r.params_kept[col[int(n)], s] if math.isfinite(n)
                                     else math.inf for s, n in enumerate(needed)]))
      order = np.argsort(r.widths)
      frac = stats.success_fraction(r.sup_error[order], epsilon).fraction
      at_level = {f"copies_{level:g}": stats.copies_needed(np.asarray(r.widths)[order], frac,
                                                           level) for level in LEVELS}
      out.append(dict(
          target=name, method=method, layer_sizes=list(sizes), epsilon=epsilon,
          **{k: v if math.isfinite(v) else None for k, v in at_level.items()},
          copies_needed_median=med if math.isfinite(med) else None,
          copies_needed_per_seed=[float(x) if math.isfinite(x) else None for x in needed],
          max_width=int(max(r.widths)), target_params=int(r.target_params),
          params_needed_median=params_needed if math.isfinite(params_needed) else None,
          max_params=int(max(r.params_random)),
          kept_needed_median=kept_needed if math.isfinite(kept_needed) else None,
          depth=constructions.get(method).depth(len(sizes) - 1),
          sup_error_at_max_width=float(np.median(r.sup_error[int(np.argmax(r.widths))])),
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

  copies = (f"{'P>=.5':>5} {'P>=.9':>5} {'median':>6} {'theory':>6} {'C':>4} {'C fit':>5} "
            f"{'LB':>5}")
  params = f"{'needed':>8} {'theory':>8} {'LB P':>7}"
  lines = [f"copies per input needed for sup_(|x|<=1) |f(x) - g(x)| <= eps: for success "
           f"over seeds >= 0.5 and >= 0.9, and the median of the seeds' own copies needed "
           f"('>W': not reached within the grid's max width W)",
           f"{'':<27} {'copies per input n':^{len(copies)}} | "
           f"{'params':^{len(params)}} |",
           f"{'target':<18} {'method':<8} {copies} | {params} | {'LB width':>8} {'Malach':>8}"]
  for row in summary:
    lines.append(
        f"{row['target']:<18} {row['method']:<8} "
        f"{needed(row['copies_0.5'], row['max_width'], '.0f'):>5} "
        f"{needed(row['copies_0.9'], row['max_width'], '.0f'):>5} "
        f"{needed(row['copies_needed_median'], row['max_width'], '.0f'):>6} "
        f"{max(row['theory_copies']):>6d} {row['theory_constant']:>4g} "
        f"{fmt(row['fitted_constant'], '.2f'):>5} {row['lower_bound_per_input']:>5.2f} | "
        f"{needed(row['params_needed_median'], row['max_params'], '.0f'):>8} "
        f"{row['theory_params']:>8d} {row['lower_bound_params']:>7.0f} | "
        f"{row['lower_bound_width']:>8.1f} {row['malach_width_factor']:>8.3g}")
  lines.append(
      "copies: theory = ceil(C log2(d_in d_out l / eps)) (lth_jax.theory; C fit = median / "
      "log2(...)); LB = counting lower bound per input (LB width / d_in)\n"
      "params: random network (direct: coefficients) at the copies needed (measured) and at "
      "the theory copies; LB P = d_in d_out log2(1/(2 eps)) summed over layers\n"
      "LB width = P / (d_in + d_out) hidden units; Malach = width factor d^4 l^2 (constant "
      "1, no eps term)")
  return "\n".join(lines)


def format_constructions_table(summary) -> str:
  """Constructions side by side per target at the summary's epsilon: depth, copies needed
  (median over seeds of each seed's own), random and kept parameters there (medians)."""
  def needed(value, limit):
    return f"{value:.0f}" if value is not None else f">{limit}"

  lines = [f"constructions at sup error <= eps (medians over seeds; '>W': not reached "
           f"within the grid's max width W, or its parameters; sup@W: median sup error at W)",
           f"{'target':<18} {'method':<8} {'depth':>5} {'copies':>6} {'random params':>13} "
           f"{'kept params':>11} {'target':>7} {'sup@W':>9}"]
  for row in summary:
    kept = row["kept_needed_median"]
    lines.append(
        f"{row['target']:<18} {row['method']:<8} {row['depth']:>5d} "
        f"{needed(row['copies_needed_median'], row['max_width']):>6} "
        f"{needed(row['params_needed_median'], row['max_params']):>13} "
        f"{'-' if kept is None else format(kept, '.0f'):>11} {row['target_params']:>7d} "
        f"{row['sup_error_at_max_width']:>9.2e}")
  return "\n".join(lines)


def format_lueker_table(coverage) -> str:
  """Coverage per (kind, n) beside the SPEC's reference values."""
  lines = [f"{'kind':<9} {'n':>3} {'covered':>8} {'(upper)':>8} {'reference':>9} {'trials':>6}"]
  for c in coverage:
    ref = lueker.REFERENCE.get(c.kind, {}).get(c.n)
    lines.append(f"{c.kind:<9} {c.n:>3} {c.covered:>8.2f} {c.covered_upper:>8.2f} "
                 f"{'-' if ref is None else format(ref, '.2f'):>9} {c.trials:>6}")
  return "\n".join(lines)


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
    if r["variant"] not in ("network", "lplus1"):
      continue
    diff = r["dense_check_rel_diff"]
    check = f"structured-vs-dense rel. diff {'-' if diff is None else format(diff, '.1e')}"
    if r["variant"] == "network":
      lines.append(
          f"network/{r['objective']} ({r.get('construction', 'network')}): random network "
          f"{_fmt_int(r['initial_params'])} params, "
          f"hidden widths {r['hidden_widths']}, copies/layer {r['copies']}, max_half "
          f"{r['max_half']}, {check}")
    else:
      lines.append(
          f"lplus1/{r['objective']}: depth-{r['depth']} random network "
          f"{_fmt_int(r['initial_params'])} params, {r['copies']} copies per neuron, instance "
          f"size {r['max_half']}, {check}")
  return "\n".join(lines)


# Experiment 2 (edge-popup).


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
