"""Tests for lth_jax.data: IDX round trips and corruptions, loaders, download, batching."""

import functools
import gzip
import http.server
import json
import os
import pathlib
import socket
import threading

import jax
import numpy as np
import pytest

import helpers
from lth_jax import data
from lth_jax import targets

STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def make_split(directory, split="test", n=20, gz=True, images=None, labels=None, seed=0):
  """Writes a small valid (unless overridden) IDX split; returns (images, labels) written."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) if images is None else images
  labels = rng.integers(0, 10, n).astype(np.uint8) if labels is None else labels
  suffix = ".gz" if gz else ""
  image_stem, label_stem = STEMS[split]
  data.write_idx(pathlib.Path(directory) / (image_stem + suffix), images)
  data.write_idx(pathlib.Path(directory) / (label_stem + suffix), labels)
  return images, labels


# ----------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
def test_idx_round_trip(tmp_path, gz, dtype):
  x = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
  path = data.write_idx(tmp_path / ("x.idx" + (".gz" if gz else "")), x)
  y = data.read_idx(path)
  assert y.dtype == x.dtype and y.shape == x.shape
  np.testing.assert_array_equal(y, x)
  y[0, 0, 0] = 1  # writable, native order


def test_gzip_detected_by_magic_not_name(tmp_path):
  x = np.arange(12, dtype=np.uint8).reshape(3, 4)
  path = tmp_path / "no-suffix"
  path.write_bytes(gzip.compress((data.write_idx(tmp_path / "raw", x)).read_bytes()))
  np.testing.assert_array_equal(data.read_idx(path), x)


def test_idx_big_endian_layout(tmp_path):
  # Header and payload are big-endian per the format: 0x0102 stored as bytes 01 02.
  path = data.write_idx(tmp_path / "x", np.array([0x0102], np.int16))
  assert path.read_bytes() == bytes([0, 0, 0x0B, 1, 0, 0, 0, 1, 1, 2])


def _raw_idx(tmp_path, x=None):
  x = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) if x is None else x
  return data.write_idx(tmp_path / "x.idx", x).read_bytes()


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b"\x01" + b[1:], "bad IDX magic"),
    (lambda b: b[:2] + b"\x07" + b[3:], "unknown IDX type code 0x07"),
    (lambda b: b[:3] + b"\x00" + b[4:], "0 dimensions"),
    (lambda b: b[:-1], "truncated"),
    (lambda b: b + b"\x00", "trailing bytes"),
    (lambda b: b[:9], "truncated IDX header"),
    (lambda b: b[:3], "too short"),
])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_corruptions_name_the_file(tmp_path, mutate, message, gz):
  payload = mutate(_raw_idx(tmp_path))
  path = tmp_path / ("bad-file-name" + (".gz" if gz else ""))
  path.write_bytes(gzip.compress(payload) if gz else payload)
  with pytest.raises(data.DataError, match=message) as info:
    data.read_idx(path)
  assert str(path) in str(info.value)
  assert isinstance(info.value, ValueError)


def test_truncated_gzip_stream(tmp_path):
  path = tmp_path / "cut.gz"
  path.write_bytes(gzip.compress(_raw_idx(tmp_path))[:-10])
  with pytest.raises(data.DataError, match="corrupt gzip") as info:
    data.read_idx(path)
  assert str(path) in str(info.value)


def test_read_idx_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothing-here"):
    data.read_idx(tmp_path / "nothing-here")


# ----------------------------------------------------------------------------- load_dataset


@pytest.mark.parametrize("gz", [False, True])
def test_load_test_split_alone(tmp_path, gz):
  images, labels = make_split(tmp_path, "test", n=20, gz=gz)  # no train files at all
  ds = data.load_dataset("mnist", "test", tmp_path)
  assert ds.images.shape == (20, 28, 28, 1) and ds.images.dtype == np.float32
  assert ds.labels.shape == (20,) and ds.labels.dtype == np.int32
  np.testing.assert_allclose(ds.images[..., 0], images / 255.0, rtol=1e-6)
  np.testing.assert_array_equal(ds.labels, labels)
  assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0


def test_load_normalize_limit_and_names(tmp_path):
  make_split(tmp_path, "train", n=30)
  plain = data.load_dataset("kmnist", "train", tmp_path)
  norm = data.load_dataset("KMNIST", "train", str(tmp_path), normalize=True, limit=7)
  assert norm.images.shape == (7, 28, 28, 1) and norm.images.dtype == np.float32
  np.testing.assert_allclose(norm.images, (plain.images[:7] - 0.1307) / 0.3081, rtol=1e-5)
  fashion = data.load_dataset("fashion-mnist", "train", tmp_path)
  np.testing.assert_array_equal(fashion.labels, plain.labels)
  with pytest.raises(ValueError, match="limit"):
    data.load_dataset("mnist", "train", tmp_path, limit=0)


def test_load_errors(tmp_path):
  with pytest.raises(ValueError, match="data_dir"):
    data.load_dataset("mnist")
  with pytest.raises(ValueError, match="unknown dataset"):
    data.load_dataset("cifar10", data_dir=tmp_path)
  with pytest.raises(ValueError, match="unknown split"):
    data.load_dataset("mnist", "val", tmp_path)
  with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte") as info:
    data.load_dataset("mnist", "test", tmp_path)
  assert "download_dataset" in str(info.value)


def test_missing_default_dataset_hints_apt(tmp_path, monkeypatch):
  monkeypatch.setattr(data, "FASHION_MNIST_DIR", str(tmp_path / "absent"))
  with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
    data.load_dataset()


@pytest.mark.parametrize("kind", ["count", "shape", "range", "label_ndim", "dtype"])
def test_inconsistent_files_name_them(tmp_path, kind):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, 10).astype(np.uint8)
  if kind == "count":
    labels = labels[:9]
  elif kind == "shape":
    images = images[:, :27, :]
  elif kind == "range":
    labels[3] = 10
  elif kind == "label_ndim":
    labels = labels.reshape(5, 2)
  elif kind == "dtype":
    images = images.astype(np.float32)
  make_split(tmp_path, "test", images=images, labels=labels)
  culprit = {"count": "labels-idx1", "shape": "images-idx3", "range": "labels-idx1",
             "label_ndim": "labels-idx1", "dtype": "images-idx3"}[kind]
  with pytest.raises(data.DataError, match=culprit) as info:
    data.load_dataset("mnist", "test", tmp_path)
  assert str(tmp_path) in str(info.value)


def test_synthetic_is_deterministic_and_shaped():
  a = data.load_dataset("synthetic", "train")
  b = data.load_dataset("synthetic", "train")
  c = data.load_dataset("synthetic", "train", seed=1)
  t = data.load_dataset("synthetic", "test", limit=100)
  assert a.images.shape == (2048, 28, 28, 1) and t.images.shape == (100, 28, 28, 1)
  assert a.images.dtype == np.float32 and a.labels.dtype == np.int32
  np.testing.assert_array_equal(a.images, b.images)
  assert not np.array_equal(a.images, c.images)
  assert not np.array_equal(a.images[:100], t.images)
  assert set(np.unique(a.labels)) == set(range(10))
  assert 0.0 <= a.images.min() and a.images.max() <= 1.0


@pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                    reason="dataset-fashion-mnist not installed (apt-get install "
                           "dataset-fashion-mnist)")
def test_real_fashion_mnist_test_split():
  ds = data.load_dataset()
  assert ds.images.shape == (10000, 28, 28, 1) and ds.labels.shape == (10000,)
  assert ds.images.min() == 0.0 and ds.images.max() == 1.0
  np.testing.assert_array_equal(np.bincount(ds.labels, minlength=10), np.full(10, 1000))


# ----------------------------------------------------------------------------- download


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
  def log_message(self, *args):
    pass


@pytest.fixture
def http_dir(tmp_path):
  """(directory served on 127.0.0.1, base URL); the server stops after the test."""
  served = tmp_path / "served"
  served.mkdir()
  server = http.server.ThreadingHTTPServer(
      ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(served)))
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
  finally:
    server.shutdown()
    server.server_close()
    thread.join()


def test_download_from_loopback(http_dir, tmp_path):
  served, url = http_dir
  _, test_labels = make_split(served, "test", n=12)
  make_split(served, "train", n=30, seed=1)
  dest = tmp_path / "dest" / "mnist"
  assert data.download_dataset("mnist", dest, url.rstrip("/")) == dest
  assert sorted(p.name for p in dest.iterdir()) == sorted(
      f"{s}.gz" for pair in STEMS.values() for s in pair)  # no temporary files left
  assert data.load_dataset("mnist", "train", dest).images.shape == (30, 28, 28, 1)
  np.testing.assert_array_equal(data.load_dataset("mnist", "test", dest).labels, test_labels)
  # A second call finds valid files and fetches nothing (the server could be gone).
  (served / "t10k-images-idx3-ubyte.gz").unlink()
  data.download_dataset("mnist", dest, url)


def test_download_rejects_corrupt_and_missing_files(http_dir, tmp_path):
  served, url = http_dir
  make_split(served, "train", n=5)
  make_split(served, "test", n=5)
  bad = served / "t10k-labels-idx1-ubyte.gz"
  bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x09abc"))  # truncated
  dest = tmp_path / "dest"
  with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte"):
    data.download_dataset("fashion_mnist", dest, url)
  assert not (dest / bad.name).exists()
  assert not [p for p in dest.iterdir() if p.name.endswith(".part")]
  bad.unlink()
  with pytest.raises(OSError, match="could not download"):
    data.download_dataset("fashion_mnist", dest, url)
  with pytest.raises(ValueError, match="nothing to download"):
    data.download_dataset("synthetic", dest, url)


@pytest.mark.parametrize("stall", ["before_headers", "mid_body"])
def test_download_timeout_names_the_url(tmp_path, stall):
  """A server that stops sending: a clear error naming the URL after `timeout`, no file."""
  listener = socket.create_server(("127.0.0.1", 0))
  release = threading.Event()

  def serve():
    conn, _ = listener.accept()
    with conn:
      conn.recv(65536)  # the request
      if stall == "mid_body":  # headers and 2 of the promised 100000 bytes, then silence
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\n\x1f\x8b")
      release.wait(30)

  thread = threading.Thread(target=serve, daemon=True)
  thread.start()
  url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
  dest = tmp_path / "dest"
  try:
    with pytest.raises(data.DownloadError,
                       match=rf"could not download {url}train-images-idx3-ubyte.gz: no data "
                       r"for 0.5 s"):
      data.download_dataset("mnist", dest, url, timeout=0.5)
  finally:
    release.set()
    thread.join()
    listener.close()
  assert issubclass(data.DownloadError, OSError)
  assert list(dest.iterdir()) == []  # the partial download was removed


def test_resolve_data_dir_downloads_only_when_asked(http_dir, tmp_path):
  served, url = http_dir
  make_split(served, "train", n=6)
  make_split(served, "test", n=4)
  dest = tmp_path / "dest"
  assert data.resolve_data_dir("mnist", dest, base_url=url) == dest
  assert not dest.exists()  # download=False: nothing fetched, nothing created
  assert data.resolve_data_dir("synthetic", None, download=True) is None
  assert data.resolve_data_dir("fashion_mnist") == pathlib.Path(data.FASHION_MNIST_DIR)
  with pytest.raises(ValueError, match="needs data_dir"):
    data.resolve_data_dir("mnist", None, download=True, base_url=url)
  # Only missing files are fetched: an unpacked (raw) copy counts as present.
  dest.mkdir()
  raw_images, _ = make_split(dest, "test", n=4, gz=False, seed=7)
  (dest / "t10k-labels-idx1-ubyte").unlink()
  (served / "t10k-images-idx3-ubyte.gz").unlink()  # fetching it would be an HTTP 404
  assert data.resolve_data_dir("mnist", dest, download=True, base_url=url) == dest
  np.testing.assert_array_equal(data.load_dataset("mnist", "test", dest).images[..., 0],
                                raw_images / np.float32(255))
  assert data.load_dataset("mnist", "train", dest).labels.shape == (6,)


def _subset_sum(*args):
  """``python -m experiments.subset_sum *args`` in this process (helpers.invoke; the entry
  point's own process runs in test_run_experiment1): (exit status, stderr)."""
  return helpers.invoke("experiments.subset_sum", *args)


def test_download_flag_of_the_experiment(http_dir, tmp_path):
  """experiments/subset_sum.py --download fetches the IDX files into --data_dir from the
  (loopback) mirror; without the flag nothing is fetched and the error points to it."""
  served, url = http_dir
  _, test_labels = make_split(served, "test", n=16)
  make_split(served, "train", n=8, seed=1)
  rng = np.random.default_rng(0)
  npz = targets.save_npz_target(
      tmp_path / "t.npz", [0.1 * rng.normal(size=(784, 4)), 0.1 * rng.normal(size=(4, 10))])
  dest = tmp_path / "mnist"
  dest.mkdir()
  common = ["--dataset=mnist", f"--data_dir={dest}", f"--config.target.npz={npz}",
            f"--config.download_url={url}", "--config.variants=direct",
            "--config.objectives=min_error", "--config.direct.copies=4"]
  code, stderr = _subset_sum(f"--out_dir={tmp_path / 'no'}", *common)
  assert code != 0
  assert "t10k-images-idx3-ubyte" in stderr and "--download" in stderr
  assert list(dest.iterdir()) == []  # nothing was downloaded

  code, stderr = _subset_sum(f"--out_dir={tmp_path / 'yes'}", "--download", *common)
  assert code == 0, stderr[-3000:]
  assert sorted(p.name for p in dest.iterdir()) == sorted(
      f"{s}.gz" for pair in STEMS.values() for s in pair)
  np.testing.assert_array_equal(data.load_dataset("mnist", "test", dest).labels, test_labels)
  (row,) = [json.loads(l) for l in (tmp_path / "yes" / "results.jsonl").read_text().splitlines()]
  assert row["dataset"] == "mnist" and row["test_examples"] == 16
  assert row["config"]["download"] is True


# ----------------------------------------------------------------------------- batches


def test_batches():
  ds = data.Dataset(np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1),
                    np.arange(10, dtype=np.int32))
  ordered = list(data.batches(ds, 4))
  assert [len(b.labels) for b in ordered] == [4, 4, 2]
  np.testing.assert_array_equal(np.concatenate([b.labels for b in ordered]), np.arange(10))
  key = jax.random.key(3)
  shuffled = list(data.batches(ds, 4, key, drop_last=True))
  assert [len(b.labels) for b in shuffled] == [4, 4]
  again = list(data.batches(ds, 4, key, drop_last=True))
  for a, b in zip(shuffled, again):
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.images[:, 0, 0, 0], a.labels)  # pairs stay together
  everything = np.concatenate([b.labels for b in data.batches(ds, 3, key)])
  assert sorted(everything) == list(range(10)) and list(everything) != list(range(10))
  with pytest.raises(ValueError):
    list(data.batches(ds, 0))
