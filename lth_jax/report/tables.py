"""Text tables of every experiment."""

from __future__ import annotations

from collections.abc import Sequence


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
