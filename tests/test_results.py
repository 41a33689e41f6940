"""lth_jax.results.write_jsonl: the one JSON-lines writer (atomic temp file + rename)."""

import os
import stat

import numpy as np
import pytest

from lth_jax import results


def test_write_jsonl_round_trip_and_path_types(tmp_path):
  rows = [{"b": np.float32(0.5), "a": np.arange(3), "nan": float("nan")}, {"x": (1, 2)}]
  path = results.write_jsonl(str(tmp_path / "sub" / "r.jsonl"), rows)  # str path, new dir
  assert path == tmp_path / "sub" / "r.jsonl"
  assert path.read_text().splitlines()[0] == '{"a": [0, 1, 2], "b": 0.5, "nan": null}'
  assert results.read_jsonl(path) == [{"a": [0, 1, 2], "b": 0.5, "nan": None}, {"x": [1, 2]}]
  results.write_jsonl(path, (r for r in rows[:1]))  # any iterable; replaces the old file
  assert len(results.read_jsonl(path)) == 1
  assert sorted(os.listdir(path.parent)) == ["r.jsonl"]
  umask = os.umask(0)
  os.umask(umask)
  assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_write_jsonl_failure_keeps_the_previous_file(tmp_path, monkeypatch):
  path = results.write_jsonl(tmp_path / "r.jsonl", [{"epoch": 1}])

  def rows():
    yield {"epoch": 1}
    raise RuntimeError("killed while producing rows")

  with pytest.raises(RuntimeError):
    results.write_jsonl(path, rows())
  monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
  with pytest.raises(OSError):
    results.write_jsonl(path, [{"epoch": 1}, {"epoch": 2}])
  assert results.read_jsonl(path) == [{"epoch": 1}]
  assert os.listdir(tmp_path) == ["r.jsonl"]  # no temporary file left behind
