r"""Tables and log-law figures of the finished targets of an unfinished (resumable) sweep.

  python scripts/sweep_partial.py docs/runs/sweep_paper

Reads the run's config (``run.json``) and every finished target's grid (``targets/*.npz``,
``lth_jax.run.sweep_store``), runs the sweep's own analysis (``run.sweep.analyse``: success
with Wilson intervals at every eps, copies needed at levels 0.5 and 0.9, the log-law fits)
on them, and writes ``<run>/partial/``: ``tables.txt``, ``copies.jsonl``, ``fits.json``,
``log_law.png`` (level 0.5) and ``log_law_0.9.png``. The run itself is untouched, so it can
still be resumed (``python -m experiments.sweep`` with the same flags and ``--out_dir``).
"""

from __future__ import annotations

import json
import pathlib
import sys

import ml_collections

from lth_jax import files
from lth_jax.report import figures
from lth_jax.report import tables
from lth_jax.run import sweep as run_sweep
from lth_jax.run import sweep_store


def main(run_dir: str) -> None:
  run = pathlib.Path(run_dir)
  fingerprint = json.loads((run / files.RUN_FILE).read_text())
  config = ml_collections.ConfigDict(fingerprint)
  named = []
  for name, _ in run_sweep.build_targets(config):
    result = sweep_store.load_target(run, name, fingerprint)
    if result is not None:
      named.append((name, result))
  if not named:
    raise SystemExit(f"no finished targets in {run / sweep_store.TARGETS_DIR}")
  analysis = run_sweep.analyse(named, config)
  out = run / "partial"
  text = [f"finished targets ({len(named)}): {', '.join(n for n, _ in named)}",
          tables.format_success_table(analysis["success"], config.sweep.epsilon),
          tables.format_log_law_table(analysis["copies"], analysis["fits"]),
          tables.format_summary_table(analysis["summary"])]
  files.atomic_write_text(out / "tables.txt", "\n\n".join(text) + "\n")
  files.write_jsonl(out / "copies.jsonl", analysis["copies"])
  files.atomic_write_text(out / "fits.json", json.dumps(files.to_jsonable(analysis["fits"]),
                                                        indent=1))
  for level, name in ((0.5, "log_law.png"), (0.9, "log_law_0.9.png")):
    figures.close(figures.plot_log_law(analysis["copies"], analysis["fits"], out / name,
                                       level=level))
  print("\n\n".join(text))
  print(f"wrote {out}")


if __name__ == "__main__":
  main(sys.argv[1])
