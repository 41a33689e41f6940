"""Report stage: the sweep's tables (summary with theory columns, grid, Lueker) and the
figures (PNG files; matplotlib stays out of the import)."""

import importlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from lth_jax import lueker
from lth_jax import stats
from lth_jax import targets as targets_lib
from lth_jax import theory
from lth_jax.report import figures
from lth_jax.report import tables

# The module (lth_jax.sweep is also the name of the re-exported sweep() function).
sweep_lib = importlib.import_module("lth_jax.sweep")

FAST = dict(num_points=32, ascent_steps=2,
            compiler_options={"xla_backend_optimization_level": 0})
WIDTHS = {"network": (3, 6, 12), "single": (3, 6, 12), "direct": (3, 6)}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def grid():
  """ONE small program: a 6x6 and a 5-4-3 target, every method, 2 seeds."""
  key = jax.random.key(1)
  targets = [targets_lib.random_target(jax.random.key(7), (6, 6)),
             targets_lib.random_target(jax.random.key(3), (5, 4, 3))]
  res = sweep_lib.sweep_targets(targets, WIDTHS, 2, ("network", "single", "direct"),
                                key=key, epsilon=0.05, **FAST)
  return key, targets, res


def test_summary_parameter_columns(grid):
  _, _, res = grid
  named = [("a6x6", res[0]), ("b5x4x3", res[1])]
  eps = 0.05
  summary = tables.summary_rows(named, eps)
  table = tables.format_summary_table(summary).splitlines()
  assert "LB P" in table[2] and "params" in table[1]
  from lth_jax import theory
  for row in summary:
    r = dict(named)[row["target"]][row["method"]]
    sizes, method = tuple(row["layer_sizes"]), row["method"]
    const = theory.C_DIRECT if method == "direct" else theory.C_NETWORK
    theory_size = theory.construction_size(sizes, eps, const, method)
    assert row["theory_params"] == theory_size.params
    assert row["theory_copies"] == list(theory_size.copies)
    assert row["lower_bound_params"] == pytest.approx(sum(
        theory.counting_lower_bound(a, b, eps).params for a, b in zip(sizes[:-1], sizes[1:])))
    needed = sweep_lib.copies_needed(r, eps)
    if row["copies_needed_median"] is None:
      assert row["params_needed_median"] is None
      expect = f">{max(r.params_random)}"
    else:
      # the measured random object at each seed's copies needed = the theory's count there
      per_seed = [theory.random_params(sizes, int(n), method) if np.isfinite(n) else np.inf
                  for n in needed]
      assert row["params_needed_median"] == pytest.approx(np.median(per_seed))
      expect = f"{row['params_needed_median']:.0f}"
    line = next(l for l in table if l.startswith(f"{row['target']:<18} {method:<8}"))
    params = line.split("|")[1].split()
    assert params == [expect, str(row["theory_params"]), f"{row['lower_bound_params']:.0f}"]
  # the lower bound never exceeds what the construction uses
  assert all(row["lower_bound_params"] < row["theory_params"] for row in summary)


def _coverage(kind, n, covered, upper, epsilon=0.01, trials=8):
  return lueker.Coverage(n=n, kind=kind, epsilon=epsilon, trials=trials, spacing=epsilon / 4,
                         worst_error=np.zeros(trials), covered=covered, covered_upper=upper)


def test_grid_table_has_every_width_and_method(grid):
  _, _, res = grid
  named = [("a6x6", res[0]), ("b5x4x3", res[1])]
  text = tables.format_grid_table(named, 0.05)
  assert text.count("target ") == 2 and "(sizes [5, 4, 3], 2 seeds" in text
  block = text.split("target b5x4x3")[1].splitlines()
  assert all(f"{m} sup" in block[1] for m in ("network", "single", "direct"))
  widths = [int(line.split("|")[0]) for line in block[2:] if line.strip()]
  assert widths == [3, 6, 12]
  # width 12 has no "direct" point: its column stays blank
  assert block[4].rstrip().endswith("|") or block[4].split("|")[3].strip() == ""


def test_lueker_table_beside_the_reference():
  cov = [_coverage("uniform", 12, 0.7, 0.72, trials=100),
         _coverage("products", 10, 0.1, 0.1, trials=100)]
  lines = tables.format_lueker_table(cov).splitlines()
  assert lines[0].split() == ["kind", "n", "covered", "(upper)", "reference", "trials"]
  assert lines[1].split() == ["uniform", "12", "0.70", "0.72",
                              format(lueker.REFERENCE["uniform"][12], ".2f"), "100"]
  assert lines[2].split()[4] == "-"  # no reference value at n = 10


def test_figures_are_written_as_png(grid, tmp_path):
  _, _, res = grid
  named = [("a6x6", res[0]), ("b5x4x3", res[1])]
  summary = tables.summary_rows(named, 0.05)
  fig = figures.plot_error_vs_copies(named, tmp_path / "e.png", 0.05)
  figures.close(fig)
  fig = figures.plot_overparam_vs_d(named[:1], [s for s in summary if s["target"] == "a6x6"],
                                    0.05, tmp_path / "o.png")
  figures.close(fig)
  cov = [_coverage("uniform", n, c, c, epsilon=0.05) for n, c in ((4, 0.2), (6, 0.5))]
  figures.close(figures.plot_lueker_check(cov, 0.05, tmp_path / "l.png"))
  for name in ("e.png", "o.png", "l.png"):
    assert (tmp_path / name).read_bytes()[:8] == PNG


def test_success_copies_and_log_law_rows(grid):
  _, _, res = grid
  named = [("random_6x6", res[0]), ("perm_5x4x3", res[1])]
  epsilons = (0.2, 0.05)
  success = tables.success_rows(named, epsilons)
  widths = {m: len(w) for m, w in WIDTHS.items()}
  assert len(success) == 2 * len(epsilons) * sum(widths.values())
  for s in success:
    assert 0 <= s["success_low"] <= s["success"] <= s["success_high"] <= 1
    assert s["seeds"] == 2 and s["family"] == s["target"].split("_")[0]
    r = dict(named)[s["target"]][s["method"]]
    i = list(r.widths).index(s["width"])
    assert s["successes"] == int(np.sum(r.sup_error[i] <= s["epsilon"]))
  copies = tables.copies_rows(named, epsilons)
  assert len(copies) == 2 * 3 * len(epsilons)
  for c in copies:
    r = dict(named)[c["target"]][c["method"]]
    frac = np.mean(r.sup_error <= c["epsilon"], axis=1)
    for level in tables.LEVELS:
      n = stats.copies_needed(r.widths, frac, level)
      assert c[f"copies_{level:g}"] == (n if np.isfinite(n) else None)
    assert c["log_term"] == pytest.approx(np.log2(c["d"] * c["depth"] / c["epsilon"]))
  assert {(c["d"], c["depth"]) for c in copies} == {(6, 1), (5, 2)}
  text = tables.format_success_table(success, 0.05)
  assert text.count("target ") == 2 and "network P(sup<=eps)" in text
  assert "log2(dl/e)" in tables.format_log_law_table(copies, tables.log_law_fits(copies))
  # a sweep of one construction (no network) still gets one row per (target, eps)
  lines = tables.format_log_law_table([c for c in copies if c["method"] == "direct"],
                                      []).splitlines()
  assert sum(l.startswith(("random_6x6 ", "perm_5x4x3 ")) for l in lines) == 2 * len(epsilons)


def test_log_law_fit_recovers_a_planted_line_and_drops_censored_points():
  copies = [dict(method="network", family="perm" if i % 2 else "random", log_term=x,
                 **{"copies_0.5": 3.0 + 2.0 * x, "copies_0.9": None if i == 0 else 5.0 + 3.0 * x})
            for i, x in enumerate((4.0, 5.0, 6.5, 8.0, 9.0))]
  fits = {(f["level"], f["group"]): f for f in tables.log_law_fits(copies)}
  fit = fits[(0.5, "all")]["fit"]
  assert fit["slope"] == pytest.approx(2.0) and fit["intercept"] == pytest.approx(3.0)
  assert fits[(0.9, "all")]["dropped"] == 1 and fits[(0.9, "all")]["points"] == 4
  assert fits[(0.9, "all")]["fit"]["slope"] == pytest.approx(3.0)
  assert fits[(0.5, "perm")]["fit"] is None  # 2 points: no fit
  text = tables.format_log_law_table([], tables.log_law_fits(copies))
  assert "C = 2.00" in text and "not enough points" in text


def test_success_and_log_law_figures_are_png(grid, tmp_path):
  _, _, res = grid
  named = [("random_6x6", res[0]), ("perm_5x4x3", res[1])]
  success = tables.success_rows(named, (0.2, 0.05))
  copies = tables.copies_rows(named, (0.2, 0.05))
  figures.close(figures.plot_success_vs_copies(success, 0.05, tmp_path / "s.png"))
  figures.close(figures.plot_log_law(copies, tables.log_law_fits(copies), tmp_path / "g.png"))
  for name in ("s.png", "g.png"):
    assert (tmp_path / name).read_bytes()[:8] == PNG


def test_plot_coverage_draws_curves_and_reference_lines():
  import matplotlib
  matplotlib.use("Agg")
  cov = [_coverage("products", n, c, c + 0.1) for n, c in ((20, 0.2), (28, 0.6))]
  ax = figures.plot_coverage({"products": cov}, {"products": theory.C_LUEKER_HALF})
  assert len(ax.lines) >= 3  # measured, SPEC reference, the C log2(1/eps) line
  figures.close(ax.figure)


def test_report_imports_no_matplotlib():
  code = ("import sys, lth_jax.report.tables, lth_jax.report.figures, lth_jax.run.sweep; "
          "print('matplotlib' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"


def test_constructions_table_depth_copies_and_kept(grid):
  _, _, res = grid
  named = [("a6x6", res[0]), ("b5x4x3", res[1])]
  summary = tables.summary_rows(named, 0.05)
  lines = tables.format_constructions_table(summary).splitlines()
  assert lines[1].split()[:4] == ["target", "method", "depth", "copies"]
  for row, line in zip(summary, lines[2:]):
    r = dict(named)[row["target"]][row["method"]]
    layers = len(row["layer_sizes"]) - 1
    assert row["depth"] == {"direct": layers, "network": 2 * layers,
                            "single": 2 * layers}[row["method"]]
    assert line.split()[:3] == [row["target"], row["method"], str(row["depth"])]
    # the target column is the sweep's own count (biases included when there are any)
    assert row["target_params"] == r.target_params == int(line.split()[-2])
    needed = sweep_lib.copies_needed(r, 0.05)
    if row["copies_needed_median"] is not None:
      kept = [r.params_kept[list(r.widths).index(int(n)), s] if np.isfinite(n) else np.inf
              for s, n in enumerate(needed)]
      assert row["kept_needed_median"] == pytest.approx(float(np.median(kept)))
    assert row["sup_error_at_max_width"] == pytest.approx(
        float(np.median(r.sup_error[int(np.argmax(r.widths))])))
