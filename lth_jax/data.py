"""Image classification data: an IDX reader, (Fashion-/K-)MNIST loaders and a synthetic set.

Everything here is host-side numpy: datasets are small (at most 60000 x 28 x 28) and are fed
to jitted steps batch by batch. Nothing is downloaded unless asked for: `download_dataset`,
or `resolve_data_dir(..., download=True)` (the experiments' --download flag).

Conventions: images are float32 (N, 28, 28, 1) in [0, 1] (NHWC, what Flax convolutions take),
labels int32 (N,) in [0, 10).
"""

from __future__ import annotations

import gzip
import http.client
import os
import pathlib
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from typing import NamedTuple

import jax
import numpy as np

__all__ = [
    "DataError",
    "DownloadError",
    "Dataset",
    "DATASET_NAMES",
    "read_idx",
    "write_idx",
    "load_dataset",
    "download_dataset",
    "resolve_data_dir",
    "batches",
]

# IDX type codes (third magic byte) -> big-endian numpy dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dt.newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"

NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)
# Statistics used by the official edge-popup code (MNIST's, applied to every dataset).
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
DATASET_NAMES = ("fashion_mnist", "mnist", "kmnist", "synthetic")
# Public mirrors for the opt-in `download_dataset`; not reachable from every machine.
DEFAULT_BASE_URLS = {
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "kmnist": "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
}
_FILE_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SYNTHETIC_SIZES = {"train": 2048, "test": 512}


class DataError(ValueError):
  """A data file exists but its contents are malformed or inconsistent."""


class DownloadError(OSError):
  """An opt-in download failed: unreachable server, HTTP error or timeout (names the URL)."""


class Dataset(NamedTuple):
  """images: float32 (N, 28, 28, 1); labels: int32 (N,)."""

  images: np.ndarray
  labels: np.ndarray


# ----------------------------------------------------------------------------- IDX files


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an IDX file (gzipped or raw, told apart by the gzip magic bytes).

  Returns an array of the declared shape in native byte order. Raises FileNotFoundError if
  the file is missing and DataError (a ValueError) naming the file for a bad magic number,
  an unknown type code, or a payload shorter or longer than the declared dimensions.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"IDX file not found: {path}")
  raw = path.read_bytes()
  if raw[:2] == _GZIP_MAGIC:
    try:
      raw = gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:  # truncated or corrupt stream
      raise DataError(f"{path}: corrupt gzip data ({e})") from e
  if len(raw) < 4:
    raise DataError(f"{path}: file too short for an IDX header ({len(raw)} bytes)")
  if raw[0] != 0 or raw[1] != 0:
    raise DataError(
        f"{path}: bad IDX magic number {raw[:4].hex()} (first two bytes must be 00 00)")
  code, ndim = raw[2], raw[3]
  if code not in _IDX_DTYPES:
    raise DataError(f"{path}: unknown IDX type code 0x{code:02x} "
                    f"(known: {', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)})")
  if ndim == 0:
    raise DataError(f"{path}: IDX header declares 0 dimensions")
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise DataError(f"{path}: truncated IDX header (needs {header} bytes, has {len(raw)})")
  shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
  dtype = _IDX_DTYPES[code]
  expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  actual = len(raw) - header
  if actual != expected:
    what = "truncated" if actual < expected else "trailing bytes after the data"
    raise DataError(f"{path}: {what}: dims {shape} of {dtype.name} need {expected} data "
                    f"bytes, file has {actual}")
  # astype copies into native byte order, so the result is writable and owns its memory.
  return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> pathlib.Path:
  """Writes `array` as an IDX file, gzipped iff `path` ends in .gz (fixtures, exports)."""
  path = pathlib.Path(path)
  array = np.asarray(array)
  native = array.dtype.newbyteorder("=")
  if native not in _IDX_CODES:
    raise ValueError(f"dtype {array.dtype} has no IDX type code")
  if not 1 <= array.ndim <= 255:
    raise ValueError(f"IDX needs 1..255 dimensions, got shape {array.shape}")
  code = _IDX_CODES[native]
  payload = (bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
             + array.astype(_IDX_DTYPES[code]).tobytes())
  if path.suffix == ".gz":
    payload = gzip.compress(payload, mtime=0)  # mtime=0: byte-identical reruns
  path.write_bytes(payload)
  return path


# ----------------------------------------------------------------------------- datasets


def _canonical_name(name: str) -> str:
  key = name.lower().replace("-", "_")
  if key not in DATASET_NAMES:
    raise ValueError(f"unknown dataset {name!r}; choose one of {DATASET_NAMES}")
  return key


def _check_split(split: str) -> None:
  if split not in _FILE_STEMS:
    raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")


def _find_file(data_dir: pathlib.Path, stem: str, name: str) -> pathlib.Path:
  # Raw first: if a user unpacked the .gz, that copy is the one they meant.
  for candidate in (data_dir / stem, data_dir / f"{stem}.gz"):
    if candidate.is_file():
      return candidate
  hint = ""
  if name == "fashion_mnist" and data_dir == pathlib.Path(FASHION_MNIST_DIR):
    hint = " (install it with `apt-get install dataset-fashion-mnist`)"
  elif name in DEFAULT_BASE_URLS:
    hint = (f" (fetch it with --download, or lth_jax.data.download_dataset({name!r}, "
            f"{str(data_dir)!r}))")
  raise FileNotFoundError(f"{name}: neither {data_dir / stem} nor {data_dir / stem}.gz "
                          f"exists{hint}")


def _read_split(name: str, split: str, data_dir: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
  """Raw uint8 images (N, 28, 28) and labels (N,) of one split, validated."""
  image_stem, label_stem = _FILE_STEMS[split]
  image_path = _find_file(data_dir, image_stem, name)
  label_path = _find_file(data_dir, label_stem, name)
  images, labels = read_idx(image_path), read_idx(label_path)
  if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
    raise DataError(f"{image_path}: expected images of shape (N, 28, 28), got {images.shape}")
  if images.dtype != np.uint8:
    raise DataError(f"{image_path}: expected uint8 pixels, got {images.dtype}")
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f"{label_path}: expected 1-D integer labels, got "
                    f"{labels.dtype} {labels.shape}")
  if len(images) != len(labels):
    raise DataError(f"{image_path} has {len(images)} images but {label_path} has "
                    f"{len(labels)} labels")
  if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
    raise DataError(f"{label_path}: labels must lie in [0, {NUM_CLASSES}), found "
                    f"[{labels.min()}, {labels.max()}]")
  return images, labels


def _synthetic(split: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Ten random blurry class prototypes plus per-example noise and shifts: learnable by an
  MLP in seconds, yet not separable by a single pixel. Same prototypes for both splits."""
  proto_rng = np.random.default_rng([seed, 0])
  coarse = proto_rng.uniform(size=(NUM_CLASSES, 7, 7))
  prototypes = np.kron(coarse, np.ones((4, 4)))  # (10, 28, 28), smooth at the 4-pixel scale
  rng = np.random.default_rng([seed, 1 if split == "train" else 2])
  n = SYNTHETIC_SIZES[split]
  labels = rng.integers(0, NUM_CLASSES, size=n)
  shifts = rng.integers(-2, 3, size=(n, 2))
  images = np.stack([np.roll(prototypes[y], tuple(s), axis=(0, 1))
                     for y, s in zip(labels, shifts)])
  images = 0.5 * images + 0.5 * rng.uniform(size=images.shape)
  return np.round(255 * images).astype(np.uint8), labels


def load_dataset(name: str = "fashion_mnist", split: str = "test",
                 data_dir: str | os.PathLike | None = None, normalize: bool = False,
                 limit: int | None = None, *, seed: int = 0) -> Dataset:
  """Loads one split as float32 images (N, 28, 28, 1) in [0, 1] and int32 labels (N,).

  name: "fashion_mnist" (default directory /usr/share/datasets/fashion-mnist), "mnist" or
    "kmnist" (data_dir required), or "synthetic" (generated from `seed`, no files).
  split: "train" or "test"; only that split's two files are read, as
    {train,t10k}-{images-idx3,labels-idx1}-ubyte, raw or .gz.
  normalize: apply (x - 0.1307) / 0.3081, as the official edge-popup code does.
  limit: keep only the first `limit` examples.
  """
  name = _canonical_name(name)
  _check_split(split)
  if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 1):
    raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
  if name == "synthetic":
    images, labels = _synthetic(split, seed)
  else:
    if data_dir is None:
      if name != "fashion_mnist":
        raise ValueError(f"dataset {name!r} has no default location: pass data_dir "
                         "(a directory holding its IDX files)")
      data_dir = FASHION_MNIST_DIR
    images, labels = _read_split(name, split, pathlib.Path(data_dir))
  if limit is not None:
    images, labels = images[:limit], labels[:limit]
  x = images.astype(np.float32)[..., None] / np.float32(255)
  if normalize:
    x = (x - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)
  return Dataset(x, labels.astype(np.int32))


# ----------------------------------------------------------------------------- download


def _valid_copy(data_dir: pathlib.Path, stem: str) -> bool:
  """Whether `stem` is already in data_dir, raw or .gz (as `_find_file` looks), and parses."""
  for candidate in (data_dir / stem, data_dir / f"{stem}.gz"):
    if candidate.is_file():
      try:
        read_idx(candidate)
        return True
      except DataError:
        pass  # damaged: fetch a fresh .gz
  return False


def download_dataset(name: str, data_dir: str | os.PathLike,
                     base_url: str | None = None, *, timeout: float = 60.0) -> pathlib.Path:
  """Opt-in: fetches the four standard .gz files of `name` from `base_url` into data_dir.

  Each file is written to a temporary file in data_dir, parsed with `read_idx`, then renamed
  into place, so a failed or corrupt download never leaves a file under the final name.
  Files already present (raw or .gz) and parseable are kept: only missing ones are fetched.
  Returns data_dir; afterwards `load_dataset(name, split, data_dir)` works for both splits.

  Raises:
    DownloadError (an OSError): "could not download <url>: ..." when the server is
      unreachable, answers with an HTTP error, closes the connection early, or sends
      nothing for `timeout` seconds (while connecting or mid-transfer).
    DataError: a downloaded file is not a valid IDX file.
  """
  name = _canonical_name(name)
  if name == "synthetic":
    raise ValueError("the synthetic dataset is generated, there is nothing to download")
  base_url = base_url or DEFAULT_BASE_URLS[name]
  if not base_url.endswith("/"):
    base_url += "/"
  data_dir = pathlib.Path(data_dir)
  data_dir.mkdir(parents=True, exist_ok=True)
  for stem in (s for pair in _FILE_STEMS.values() for s in pair):
    if _valid_copy(data_dir, stem):
      continue
    target = data_dir / f"{stem}.gz"
    url = base_url + target.name
    fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=f".{target.name}.", suffix=".part")
    try:
      try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
          while chunk := r.read(1 << 20):
            out.write(chunk)
      except TimeoutError as e:  # raised bare (not as URLError) once the response started
        raise DownloadError(f"could not download {url}: no data for {timeout:g} s "
                            f"({e})") from e
      except http.client.HTTPException as e:  # e.g. IncompleteRead: connection closed early
        raise DownloadError(f"could not download {url}: {type(e).__name__}: {e}") from e
      except OSError as e:  # URLError/HTTPError are OSErrors too
        reason = getattr(e, "reason", None) or e
        if isinstance(reason, TimeoutError):
          reason = f"no answer for {timeout:g} s ({reason})"
        raise DownloadError(f"could not download {url}: {reason}") from e
      try:
        read_idx(tmp)
      except DataError as e:
        raise DataError(f"downloaded {url} is not a valid IDX file: {e}") from e
      os.replace(tmp, target)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
  for split in _FILE_STEMS:  # images/labels counts and ranges agree
    _read_split(name, split, data_dir)
  return data_dir


def resolve_data_dir(name: str, data_dir: str | os.PathLike | None = None, *,
                     download: bool = False, base_url: str | None = None,
                     timeout: float = 60.0) -> pathlib.Path | None:
  """The directory `load_dataset(name, ..., data_dir)` will read, after an opt-in download.

  Returns None for "synthetic" (no files), data_dir (expanded) if given, else the default
  location (fashion_mnist only). With download=True, the standard files missing from
  data_dir are fetched first (`download_dataset`; data_dir is required and created);
  without it nothing is ever fetched.
  """
  name = _canonical_name(name)
  if name == "synthetic":
    return None
  if data_dir is None or str(data_dir) == "":
    if download:
      raise ValueError(f"download of {name!r} needs data_dir (the directory to download into)")
    if name != "fashion_mnist":
      raise ValueError(f"dataset {name!r} has no default location: pass data_dir "
                       "(a directory holding its IDX files)")
    return pathlib.Path(FASHION_MNIST_DIR)
  data_dir = pathlib.Path(os.path.expanduser(os.fspath(data_dir)))
  if download:
    download_dataset(name, data_dir, base_url, timeout=timeout)
  return data_dir


# ----------------------------------------------------------------------------- batching


def batches(dataset: Dataset, batch_size: int, key: jax.Array | None = None,
            drop_last: bool = False) -> Iterator[Dataset]:
  """Yields Dataset batches (numpy), in a `key`-determined random order if key is given.

  drop_last=True omits a final short batch, so a jitted step sees one shape only.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  n = len(dataset.labels)
  order = np.arange(n) if key is None else np.asarray(jax.random.permutation(key, n))
  stop = n - n % batch_size if drop_last else n
  for start in range(0, stop, batch_size):
    idx = order[start:start + batch_size]
    yield Dataset(dataset.images[idx], dataset.labels[idx])
