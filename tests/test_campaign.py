"""The bad-input and fault campaign (issue 12): every entry point, run for real.

Each case runs an entry point's module as ``python -m`` would (``runpy`` in this process,
its flags defined afresh on absl's FLAGS and removed afterwards: one interpreter start for
the whole table) and checks the failure contract of ``lth_jax/run/flags.py``: exit status
2, exactly one ``error: <what>: <why>`` line naming the flag or file, no traceback, and no
output left behind (the output directory absent or empty). The fault tests kill a writer
with SIGKILL mid-run (a subprocess) and check that the next run recognises the unfinished
directory: it resumes (streaming, edge-popup, the sweep) or refuses it with one line
(Experiment 1), and that nothing on disk is half-written.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import helpers
from lth_jax import data as data_lib
from lth_jax import files
from lth_jax.configs import edge_popup as edge_popup_configs
from lth_jax.configs import experiment1 as experiment1_configs
from lth_jax.configs import sweep as sweep_configs
from lth_jax.run import experiment1

REPO = pathlib.Path(__file__).resolve().parents[1]
SWEEP, EXP1, EP, STREAM = ("experiments.sweep", "experiments.subset_sum",
                           "experiments.edge_popup", "experiments.solve_stream")
invoke = helpers.invoke  # ``python -m module *args`` in this process: (exit status, stderr)


assert_one_error_line = helpers.assert_one_error_line


def assert_nothing_left(out: pathlib.Path) -> None:
  assert not out.exists() or (out.is_dir() and not any(out.iterdir())), sorted(
      p.name for p in out.iterdir())


# ----------------------------------------------------------------------------- bad files


def _npz(path, **arrays):
  with open(path, "wb") as f:
    np.savez(f, **arrays)
  return path


def _idx(path, array):
  data_lib.write_idx(path, np.asarray(array))
  return path


W = np.full((10, 784), 0.01, np.float32)  # a torch-layout (d_out, d_in) 784 -> 10 layer


def _target_files(d: pathlib.Path) -> dict[str, str]:
  """Malformed targets of both layouts, by name."""
  d.mkdir(exist_ok=True)
  (d / "text.npz").write_text("not a zip archive\n")
  _npz(d / "good.npz", **{"fc1.weight": W})
  (d / "truncated.npz").write_bytes((d / "good.npz").read_bytes()[:200])
  with zipfile.ZipFile(d / "pickle.npz", "w") as z:  # a pickle inside a zip, not an .npy
    z.writestr("fc1.weight.npy", b"\x80\x04K\x01.")
  made = dict(
      object=_npz(d / "object.npz", **{"fc1.weight": np.array([{"a": 1}], dtype=object)}),
      strings=_npz(d / "strings.npz", **{"fc1.weight": np.array(["a", "b"])}),
      inputs700=_npz(d / "inputs700.npz", **{"fc1.weight": np.zeros((10, 700), np.float32)}),
      nan=_npz(d / "nan.npz", **{"fc1.weight": np.where(np.eye(10, 784) > 0, np.nan, W)}),
      inf_jax=_npz(d / "inf_jax.npz", fc1=np.where(np.eye(784, 10) > 0, np.inf, W.T)),
      bias=_npz(d / "bias.npz", **{"fc1.weight": W, "fc1.bias": np.ones(10, np.float32)}),
      chain=_npz(d / "chain.npz", **{"fc1.weight": np.zeros((20, 784), np.float32),
                                     "fc2.weight": np.zeros((10, 30), np.float32)}),
      conv=_npz(d / "conv.npz", **{"fc1.weight": np.zeros((6, 1, 5, 5), np.float32)}),
      empty=_npz(d / "empty.npz", **{"fc1.bias": np.zeros(3, np.float32)}),
      jax_as_torch=_npz(d / "jax_as_torch.npz", fc1=W.T.copy()),  # (784, 10) read as torch
  )
  return {k: str(v) for k, v in made.items()} | {
      "text": str(d / "text.npz"), "truncated": str(d / "truncated.npz"),
      "pickle": str(d / "pickle.npz"), "missing": str(d / "missing.npz")}


# name -> (layout, words the error line must contain)
TARGET_CASES = {
    "text": ("torch", "not an .npz file"),
    "truncated": ("torch", "npz"),
    "pickle": ("torch", "is not a .npy array"),  # raw bytes: never unpickled
    "object": ("torch", "nothing is unpickled"),
    "strings": ("torch", "only real numeric arrays"),
    "inputs700": ("torch", "700"),
    "nan": ("torch", "NaN"),
    "inf_jax": ("jax", "NaN or infinite"),
    "bias": ("torch", "non-zero biases"),
    "chain": ("torch", "do not chain"),
    "conv": ("torch", "2-D"),
    "empty": ("torch", "no weight matrices"),
    "jax_as_torch": ("torch", "10"),
    "missing": ("torch", "missing.npz"),
}


def _idx_dirs(d: pathlib.Path) -> dict[str, str]:
  """MNIST-named test splits, each broken in one way."""
  images, labels = np.zeros((4, 28, 28), np.uint8), np.arange(4, dtype=np.uint8)
  out = {}
  for name in ("magic", "truncated", "count", "labels", "missing", "shape"):
    split = d / name
    split.mkdir(parents=True)
    out[name] = str(split)
    img, lab = split / "t10k-images-idx3-ubyte", split / "t10k-labels-idx1-ubyte"
    _idx(img, images if name != "shape" else np.zeros((4, 27, 28), np.uint8))
    _idx(lab, labels if name != "count" else labels[:3])
    if name == "magic":
      img.write_bytes(b"\x08\x03" + img.read_bytes()[2:])
    elif name == "truncated":
      img.write_bytes(img.read_bytes()[:-100])
    elif name == "labels":
      _idx(lab, np.array([0, 1, 2, 77], np.uint8))
    elif name == "missing":
      lab.unlink()
  return out


IDX_CASES = {"magic": "bad IDX magic number", "truncated": "truncated",
             "count": "4 images but", "labels": "labels must lie in", "missing": "neither",
             "shape": "expected images of shape"}


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
  d = tmp_path_factory.mktemp("bad")
  return dict(target=_target_files(d / "targets"), idx=_idx_dirs(d / "idx"), dir=d)


# ------------------------------------------------------------------- config fields


def _leaves(config, prefix=""):
  for k, v in config.items():
    if hasattr(v, "items"):
      yield from _leaves(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}", v


def _type_cases(module, configs, preset, extra=()):
  """``--config.<field>=<junk>`` for every numeric and bool field of ``preset``."""
  config = configs.get_config(preset)
  return [(module, (f"--config={preset}", f"--config.{f}=x1", *extra), f"--config.{f}")
          for f, v in _leaves(config) if isinstance(v, (bool, int, float))]


def _range_cases(module, extra, table):
  return [(module, (*extra, f"--config.{f}={v}"), f"--config.{f}") for f, v in table]


SWEEP_ARGS = ("--config=quick",)
EXP1_ARGS = ()
EP_ARGS = ("--dataset=synthetic",)
CONFIG_CASES = (
    _type_cases(SWEEP, sweep_configs, "quick")
    + _type_cases(EXP1, experiment1_configs, "smoke")
    + _type_cases(EP, edge_popup_configs, "quick", EP_ARGS)
    + _range_cases(SWEEP, SWEEP_ARGS, [
        ("sweep.widths", "(0,4)"), ("sweep.widths", "(4,4)"), ("sweep.epsilon", "2.0"),
        ("sweep.epsilon", "-0.1"), ("sweep.num_seeds", "0"), ("sweep.methods", "('nope',)"),
        ("sweep.direct_widths", "(99,)"), ("sweep.max_half", "-1"),
        ("sweep.xla_opt_level", "9"), ("sweep.distribution", "'cauchy'"),
        ("targets.sizes", "((3,),)"), ("targets.spectral_norm", "0.0"),
        ("targets.npz_layout", "'tf'"), ("lueker.trials", "-1"), ("lueker.spacing", "0.5"),
        ("lueker.uniform_sizes", "(999,)"), ("devices.process_id", "-2"),
        ("data.name", "'cifar'")])
    + _range_cases(EXP1, EXP1_ARGS, [
        ("epsilon", "0.0"), ("epsilon", "1.5"), ("variants", "direct,bogus"),
        ("objectives", "fastest"), ("direct.copies", "40"), ("direct.copies", "0"),
        ("network.copies", "(0,8)"), ("network.max_half", "(31,)"),
        ("network.distribution", "cauchy"), ("network.dense_check_batch", "-1"),
        ("solver.block_keys", "0"), ("test_limit", "-1"), ("eval_batch_size", "0"),
        ("dataset", "cifar"), ("download_url", "ftp://x/"), ("target.model", "resnet"),
        ("target.epochs", "0"), ("target.batch_size", "0"), ("target.learning_rate", "0.0"),
        ("target.npz_layout", "tf"), ("data_dir", "/no/such/dir")])
    + _range_cases(EP, EP_ARGS, [
        ("epochs", "0"), ("batch_size", "0"), ("hidden", "0"), ("redundancy", "0"),
        ("eval_batch_size", "0"), ("train_limit", "-1"), ("test_limit", "-1"),
        ("removed_fractions", "(1.5,)"), ("removed_fractions", "()"), ("seeds", "(1,1)"),
        ("seeds", "()"), ("archs", "('vgg',)"), ("variants", "('x',)"),
        ("topk_method", "'x'"), ("optim.lr_fc", "0.0"), ("optim.lr_lenet5", "-1.0")])
)


@pytest.mark.parametrize("module, args, what", CONFIG_CASES,
                         ids=[f"{m.split('.')[1]}:{' '.join(a)}" for m, a, _ in CONFIG_CASES])
def test_config_fields(tmp_path, module, args, what):
  out = tmp_path / "out"
  code, err = invoke(module, f"--out_dir={out}", *args)
  assert_one_error_line(code, err, what)
  assert_nothing_left(out)


# --------------------------------------------------------------- flags, files, data


def _file_cases():
  cases = []
  for name, (layout, why) in TARGET_CASES.items():
    if name not in ("inputs700", "jax_as_torch"):  # a sweep's random data fits any size
      cases.append((SWEEP, ("--config=quick", "--config.targets.sizes=()",
                            "--config.targets.npz={target[%s]}" % name,
                            f"--config.targets.npz_layout={layout}"),
                    ("--config.targets.npz", why)))
    cases.append((EXP1, ("--config.target.npz={target[%s]}" % name,
                         f"--config.target.npz_layout={layout}"), ("--config.target.npz", why)))
  for name, why in IDX_CASES.items():
    cases.append((EXP1, ("--dataset=mnist", "--data_dir={idx[%s]}" % name), (why,)))
    cases.append((EP, ("--dataset=mnist", "--data_dir={idx[%s]}" % name), (why,)))
    cases.append((SWEEP, ("--config=quick", "--config.data.name=mnist",
                          "--config.data.data_dir={idx[%s]}" % name), (why,)))
  return cases


FLAG_CASES = [
    # every entry point: unknown flag, stray argument, bad value, missing --out_dir
    *[(m, ("--bogus=1",), ("--bogus: unknown flag",)) for m in (SWEEP, EXP1, EP, STREAM)],
    *[(m, ("stray",), ("unexpected arguments: stray",)) for m in (SWEEP, EXP1, EP, STREAM)],
    *[(m, ("--config=nope",), ("--config", "nope")) for m in (SWEEP, EXP1, EP)],
    *[(m, ("--config.nosuchfield=1",), ("--config.nosuchfield", "unknown field"))
      for m in (SWEEP, EXP1, EP)],
    (EP, ("--preset=nope",), ("--config", "nope")),
    (EP, ("--dataset=cifar",), ("--dataset",)),
    (EP, ("--dataset=mnist",), ("--data_dir",)),
    (EP, ("--log_every_seconds=abc",), ("--log_every_seconds",)),
    (EXP1, ("--dataset=mnist",), ("data_dir",)),
    (EXP1, ("--dataset=synthetic", "--download"), ("--download", "synthetic")),
    (EXP1, ("--data_dir=/no/such/dir",), ("--data_dir", "not a directory")),
    (SWEEP, ("--config.targets.npz=/no/such.npz",), ("--config.targets.npz", "no such file")),
    (STREAM, ("--n=0",), ("--n",)), (STREAM, ("--n=99",), ("--n",)),
    (STREAM, ("--chunk_size=0",), ("--chunk_size",)),
    (STREAM, ("--num_weights=0",), ("--num_weights",)),
    (STREAM, ("--group_size=0",), ("--group_size",)),
    (STREAM, ("--epsilon=-1",), ("--epsilon",)),
    (STREAM, ("--low=1", "--high=0"), ("--low/--high",)),
    (STREAM, ("--num_processes=2",), ("--num_processes", "--distributed")),
    (STREAM, ("--weights=/no/such.npy",), ("/no/such.npy", "No such file")),
    (STREAM, ("--weights={target[text]}",), ("not an .npy file",)),
    (STREAM, ("--weights={npy[object]}",), ("nothing is unpickled",)),
    (STREAM, ("--weights={npy[nan]}",), ("NaN",)),
    (STREAM, ("--weights={npy[strings]}",), ("only real numeric arrays",)),
    (STREAM, ("--weights={npy[truncated]}",), ("weights_truncated.npy",)),
    *_file_cases(),
]


@pytest.fixture(scope="module")
def npy(bad):
  d = bad["dir"]
  np.save(d / "weights_object.npy", np.array([{}], dtype=object), allow_pickle=True)
  np.save(d / "weights_nan.npy", np.array([0.1, np.nan], np.float32))
  np.save(d / "weights_strings.npy", np.array(["a"]))
  np.save(d / "weights_truncated.npy", np.zeros(1000, np.float32))
  path = d / "weights_truncated.npy"
  path.write_bytes(path.read_bytes()[:500])
  return {k: str(d / f"weights_{k}.npy") for k in ("object", "nan", "strings", "truncated")}


@pytest.mark.parametrize("module, args, expected", FLAG_CASES,
                         ids=[f"{m.split('.')[1]}:{' '.join(a)}" for m, a, _ in FLAG_CASES])
def test_flags_files_and_data(tmp_path, bad, npy, module, args, expected):
  out = tmp_path / "out"
  args = [a.format(target=bad["target"], idx=bad["idx"], npy=npy) for a in args]
  code, err = invoke(module, *(() if "--out_dir" in " ".join(args) else (f"--out_dir={out}",)),
                     *args)
  assert_one_error_line(code, err, *expected)
  assert_nothing_left(out)


@pytest.mark.parametrize("module", [SWEEP, EXP1, EP, STREAM])
def test_missing_out_dir_flag(module):
  if module == SWEEP:
    pytest.skip("the sweep has a default --out_dir (runs/sweep-<time>)")
  assert_one_error_line(*invoke(module), "--out_dir: required")


# -------------------------------------------------------------- output directories


WRITERS = {SWEEP: ("--config=quick",), EXP1: (), EP: ("--dataset=synthetic",),
           STREAM: ("--num_weights=8", "--n=4", "--chunk_size=4")}


@pytest.mark.parametrize("module", list(WRITERS))
def test_unwritable_out_dir_fails_up_front(tmp_path, module):
  a_file = tmp_path / "a_file"
  a_file.write_text("mine")
  for out, why in ((a_file / "sub", "not writable"), (a_file, "not a directory")):
    t0 = time.perf_counter()
    code, err = invoke(module, f"--out_dir={out}", *WRITERS[module])
    assert_one_error_line(code, err, str(out), why)
    assert time.perf_counter() - t0 < 20  # before any expensive work
  assert a_file.read_text() == "mine"
  with helpers.read_only_dir(tmp_path / "locked") as locked:
    assert_one_error_line(*invoke(module, f"--out_dir={locked}", *WRITERS[module]),
                          "not writable")


@pytest.mark.parametrize("module", list(WRITERS))
def test_foreign_non_empty_out_dir_is_kept(tmp_path, module):
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  code, err = invoke(module, f"--out_dir={out}", *WRITERS[module])
  if module == STREAM:  # streaming adds its chunks next to other files, never deletes them
    assert code == 0, err[-2000:]
  else:
    assert_one_error_line(code, err, "--overwrite")
  assert (out / "keep.txt").read_text() == "mine"


# ------------------------------------------------------------------- resume state


def _ep_fingerprint(config, dataset="synthetic"):
  return {"config": json.loads(config.to_json()), "dataset": dataset, "data_dir": None}


@pytest.mark.parametrize("content, why", [
    ("garbage{", "not a run's JSON state"), ("[1, 2]", "not a run's JSON state"),
    ('{"format": 1, "n": 3}', "different run"),  # a foreign (or other settings') manifest
])
def test_stream_manifest_corrupt_foreign_or_mismatched(tmp_path, content, why):
  out = tmp_path / "out"
  out.mkdir()
  (out / "manifest.json").write_text(content)
  assert_one_error_line(*invoke(STREAM, f"--out_dir={out}", *WRITERS[STREAM]), why)
  assert (out / "manifest.json").read_text() == content  # refused: nothing changed


@pytest.mark.parametrize("content, why", [
    ("garbage{", "not a run's JSON state"), ('"a string"', "not a run's JSON state"),
    ('{"config": {}}', "settings"),  # another run's settings
])
def test_edge_popup_run_json_corrupt_foreign_or_mismatched(tmp_path, content, why):
  out = tmp_path / "out"
  out.mkdir()
  (out / "run.json").write_text(content)
  (out / "results.jsonl").write_text("{}\n")
  assert_one_error_line(*invoke(EP, f"--out_dir={out}", *WRITERS[EP]), why)
  assert (out / "run.json").read_text() == content


def test_corrupt_edge_popup_checkpoint(tmp_path):
  """Garbage in an orbax step directory of a resumable run: one line, the run's files kept."""
  out = tmp_path / "out"
  config = edge_popup_configs.get_config("quick")
  config.archs, config.variants = ("fc2",), ("relu",)
  ckpt = out / "checkpoints" / "fc2-relu" / "1"
  ckpt.mkdir(parents=True)
  (ckpt / "garbage").write_text("x")
  (out / "run.json").write_text(json.dumps(_ep_fingerprint(config)))
  code, err = invoke(EP, f"--out_dir={out}", *WRITERS[EP], "--config.archs=('fc2',)",
                     "--config.variants=('relu',)")
  line = assert_one_error_line(code, err)
  assert "checkpoint" in line or "fc2-relu" in line, line
  assert (ckpt / "garbage").exists() and (out / "run.json").exists()


def test_corrupt_target_checkpoint(tmp_path):
  """Experiment 1's orbax target checkpoint holds garbage: one line naming it."""
  config = experiment1_configs.get_config("smoke")
  config.target.checkpoint_dir = str(tmp_path / "targets")
  step = pathlib.Path(experiment1.target_checkpoint_dir(config)) / "3"
  step.mkdir(parents=True)
  (step / "garbage").write_text("x")
  out = tmp_path / "out"
  code, err = invoke(EXP1, f"--out_dir={out}", f"--config.target.checkpoint_dir={tmp_path}/targets")
  line = assert_one_error_line(code, err)
  assert "checkpoint" in line, line
  assert (step / "garbage").exists()


# ------------------------------------------------------------------ SIGKILL mid-run


def _start(module, *args):
  # Killed mid-run, their values unchecked: XLA's backend optimisation off gets them to the
  # kill point sooner.
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
             XLA_FLAGS=" ".join([os.environ.get("XLA_FLAGS", ""),
                                 "--xla_backend_optimization_level=0"]).strip())
  return subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_when(proc, ready, timeout=120.0):
  t0 = time.monotonic()
  while not ready():
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    assert time.monotonic() - t0 < timeout, "the run never reached the kill point"
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  proc.stderr.close()


def _assert_complete_files(out: pathlib.Path) -> None:
  """Every file under its final name is whole (no half-written file)."""
  for path in out.rglob("*"):
    if not path.is_file() or path.name.startswith("."):
      continue
    if path.suffix == ".json":
      json.loads(path.read_text())
    elif path.suffix == ".jsonl":
      files.read_jsonl(path)
    elif path.suffix == ".npz":
      files.load_npz(path)


SMALL_EP = ("--dataset=synthetic", "--config.archs=('fc2',)", "--config.variants=('relu',)",
            "--config.hidden=8", "--config.redundancy=2", "--config.train_limit=256",
            "--config.test_limit=64", "--config.removed_fractions=(0.5,)", "--config.epochs=2",
            "--config.seeds=(0,)", "--config.batch_size=32", "--log_every_seconds=1000")
KILLS = {
    # module: (args, file whose appearance is the kill point, what the rerun must say)
    # one method: the rerun compiles a grid program for every target and method
    SWEEP: (("--config=quick", "--config.lueker.trials=0", "--config.sweep.methods=('network',)"),
            "run.json", None),
    EXP1: (("--config.variants=direct", "--config.objectives=min_error"), "run.json",
           "unfinished run"),
    STREAM: (("--num_weights=64", "--n=6", "--chunk_size=16", "--pause_s=0.3"),
             "chunk_000000.npz", None),
    EP: (SMALL_EP, "results.jsonl", None),
}


def test_sigkill_mid_run_then_rerun(tmp_path):
  """Every writer killed mid-run (all four at once: one wait), then run again."""
  outs = {m: tmp_path / m.split(".")[1] for m in KILLS}
  procs = {m: _start(m, f"--out_dir={outs[m]}", *KILLS[m][0]) for m in KILLS}
  for m, proc in procs.items():
    _kill_when(proc, lambda m=m: (outs[m] / KILLS[m][1]).exists())
  for m, (args, _, why) in KILLS.items():
    out = outs[m]
    _assert_complete_files(out)
    assert not (out / files.DONE_FILE).exists()
    before = sorted(p.name for p in out.iterdir())
    if why is not None:  # Experiment 1 does not resume: refused, kept as is
      assert_one_error_line(*invoke(m, f"--out_dir={out}", *args), why, "--overwrite")
      assert sorted(p.name for p in out.iterdir()) == before
  # the sweep resumes: the grids of targets not saved yet are computed (sweep_store)
  code, err = invoke(SWEEP, f"--out_dir={outs[SWEEP]}", *KILLS[SWEEP][0])
  assert code == 0, err[-3000:]
  assert (outs[SWEEP] / files.DONE_FILE).exists()
  assert len(list((outs[SWEEP] / "targets").glob("*.npz"))) == 2
  # streaming resumes: the finished chunk is kept, the others are solved
  code, err = invoke(STREAM, f"--out_dir={outs[STREAM]}", *KILLS[STREAM][0][:3])
  assert code == 0, err[-3000:]
  manifest = json.loads((outs[STREAM] / "manifest.json").read_text())
  assert manifest["complete"] and len(list(outs[STREAM].glob("chunk_*.npz"))) == 4
  # edge-popup resumes from its last finished epoch
  code, err = invoke(EP, f"--out_dir={outs[EP]}", *SMALL_EP)
  assert code == 0, err[-3000:]
  rows = files.read_jsonl(outs[EP] / "results.jsonl")
  assert sorted({(r["variant"], r["epoch"]) for r in rows}) == [
      ("relu", 1), ("relu", 2)]
