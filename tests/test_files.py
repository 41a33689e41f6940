"""lth_jax.files (atomic writes, JSON lines, the out-dir guard), progress and checkpoints."""

import json
import math
import os
import stat

import numpy as np
import pytest

import helpers
from lth_jax import _checks, checkpoints
from lth_jax import files as files_lib
from lth_jax import progress as progress_lib


def test_write_jsonl_round_trip_and_path_types(tmp_path):
  rows = [{"b": np.float32(0.5), "a": np.arange(3), "nan": float("nan")}, {"x": (1, 2)}]
  path = files_lib.write_jsonl(str(tmp_path / "sub" / "r.jsonl"), rows)  # str path, new dir
  assert path == tmp_path / "sub" / "r.jsonl"
  assert path.read_text().splitlines()[0] == '{"a": [0, 1, 2], "b": 0.5, "nan": null}'
  assert files_lib.read_jsonl(path) == [{"a": [0, 1, 2], "b": 0.5, "nan": None}, {"x": [1, 2]}]
  files_lib.write_jsonl(path, (r for r in rows[:1]))  # any iterable; replaces the old file
  assert len(files_lib.read_jsonl(path)) == 1
  assert sorted(os.listdir(path.parent)) == ["r.jsonl"]
  umask = os.umask(0)
  os.umask(umask)
  assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_write_jsonl_failure_keeps_the_previous_file(tmp_path, monkeypatch):
  path = files_lib.write_jsonl(tmp_path / "r.jsonl", [{"epoch": 1}])

  def rows():
    yield {"epoch": 1}
    raise RuntimeError("killed while producing rows")

  with pytest.raises(RuntimeError):
    files_lib.write_jsonl(path, rows())
  monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
  with pytest.raises(OSError):
    files_lib.write_jsonl(path, [{"epoch": 1}, {"epoch": 2}])
  assert files_lib.read_jsonl(path) == [{"epoch": 1}]
  assert os.listdir(tmp_path) == ["r.jsonl"]  # no temporary file left behind


def test_out_dir_guard_and_atomic_writes(tmp_path):
  out = tmp_path / "run"
  files_lib.prepare_out_dir(out)
  files_lib.write_jsonl(out / "a.jsonl", [{"x": np.float32(1.5), "y": np.arange(2)}])
  assert files_lib.read_jsonl(out / "a.jsonl") == [{"x": 1.5, "y": [0, 1]}]
  assert sorted(os.listdir(out)) == ["a.jsonl"]  # no temporary files left behind
  with pytest.raises(FileExistsError, match="--overwrite"):
    files_lib.prepare_out_dir(out)
  assert (out / "a.jsonl").exists()
  files_lib.prepare_out_dir(out, overwrite=True)
  assert not any(out.iterdir())
  with pytest.raises(FloatingPointError, match="sup_error"):
    files_lib.check_finite_rows([{"sup_error": float("nan")}], ["sup_error"])


def test_out_dir_guard_resumes_only_an_unfinished_run_of_the_same_settings(tmp_path):
  out = tmp_path / "run"
  fp = {"seed": 1, "widths": (2, 4)}
  assert files_lib.prepare_out_dir(out, fingerprint=fp) == (out, False)
  assert json.loads((out / files_lib.RUN_FILE).read_text()) == {"seed": 1, "widths": [2, 4]}
  (out / "partial.jsonl").write_text("{}\n")
  assert files_lib.prepare_out_dir(out, fingerprint=fp) == (out, True)  # resumed, kept
  assert (out / "partial.jsonl").exists()
  with pytest.raises(FileExistsError, match="other settings"):
    files_lib.prepare_out_dir(out, fingerprint=dict(fp, seed=2))
  files_lib.mark_done(out, {"rows": 1})
  with pytest.raises(FileExistsError, match="finished run"):
    files_lib.prepare_out_dir(out, fingerprint=fp)
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "x.txt").write_text("x")
  with pytest.raises(FileExistsError, match="does not hold a run"):
    files_lib.prepare_out_dir(foreign, fingerprint=fp)
  assert files_lib.prepare_out_dir(foreign, overwrite=True, fingerprint=fp) == (foreign, False)
  assert sorted(os.listdir(foreign)) == [files_lib.RUN_FILE]


def test_out_dir_guard_refuses_a_file_and_an_unwritable_directory(tmp_path):
  a_file = tmp_path / "f"
  a_file.write_text("x")
  with pytest.raises(FileExistsError, match="not a directory"):
    files_lib.prepare_out_dir(a_file)
  with helpers.read_only_dir(tmp_path / "locked") as locked:
    with pytest.raises(PermissionError, match="not writable"):
      files_lib.prepare_out_dir(locked / "sub")


def test_atomic_savez_writes_exactly_the_path(tmp_path):
  path = files_lib.atomic_savez(tmp_path / "chunk_000001.npz.part", {"a": np.arange(3)})
  assert sorted(os.listdir(tmp_path)) == ["chunk_000001.npz.part"]
  with np.load(path) as z:
    np.testing.assert_array_equal(z["a"], np.arange(3))


def test_progress_counts_skipped_work_as_done_but_not_timed(monkeypatch):
  clock = iter([0.0, 10.0, 10.0, 10.0, 10.0, 10.0])
  monkeypatch.setattr(progress_lib.time, "perf_counter", lambda: next(clock))
  p = progress_lib.Progress(100, "job", "steps", every=math.inf)  # start at t = 0
  p.skip(50)
  assert math.isnan(p.eta_seconds())  # nothing done by this process yet
  p.add(10)  # t = 10: 10 steps in 10 s, 40 left -> 40 s
  assert p.done == 60
  assert p.eta_seconds() == pytest.approx(40.0)
  assert p.describe() == "60.0% (60/100 steps), 10s elapsed, ETA 40s"
  assert progress_lib.format_seconds(3725) == "1h02m"
  assert progress_lib.format_seconds(125) == "2m05s"
  assert progress_lib.format_seconds(float("nan")) == "?"


def test_checkpoints_round_trip_and_refuse_other_settings(tmp_path):
  state = {"w": np.arange(4, dtype=np.float32), "step": np.array(3, np.int32)}
  with checkpoints.Checkpoints(tmp_path / "ck", settings={"lr": 0.1}) as ck:
    assert ck.latest(state) is None
    ck.save(1, state, {"epoch": 1})
  with checkpoints.Checkpoints(tmp_path / "ck", settings={"lr": 0.1}) as ck:
    restored, meta, step = ck.latest(state)
    assert step == 1 and meta["epoch"] == 1 and meta["config"] == {"lr": 0.1}
    np.testing.assert_array_equal(restored["w"], state["w"])
  with checkpoints.Checkpoints(tmp_path / "ck", settings={"lr": 0.2}) as ck:
    with pytest.raises(checkpoints.SettingsMismatch, match="lr"):
      ck.latest(state)


def test_checks():
  assert _checks.is_int(3) and _checks.is_int(np.int64(3))
  assert not _checks.is_int(True) and not _checks.is_int(2.0)
  assert _checks.is_int_seq((1, 2)) and not _checks.is_int_seq((1, 2.5))
  _checks.check_finite([("a", np.ones(2))], "x")
  with pytest.raises(ValueError, match="x b contains NaN"):
    _checks.check_finite([("a", np.ones(2)), ("b", np.array([np.nan]))], "x")
