"""Tests for lth_jax.run.experiment1 (with its config checks; its direct variant is
find_ticket with objectives.blocked_solver) and the experiments.subset_sum entry point
(Experiment 1)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from lth_jax import construction
from lth_jax import constructions
from lth_jax import data as data_lib
from lth_jax import evaluation
from lth_jax import files
from lth_jax import models
from lth_jax import objectives
from lth_jax import random_net as rn
from lth_jax import sizing
from lth_jax import targets as targets_lib
from lth_jax import training
from lth_jax.configs import experiment1 as configs
from lth_jax.constructions import direct
from lth_jax.run import experiment1
from lth_jax.run import experiment1_checks
from lth_jax.run.common import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPS = 0.01
# Every SubsetSum instance below has N = 12 coefficients (direct's n, as in the smoke
# preset; network halves padded to max_half = N), so all tests share one compiled program
# per objective: compiling, not solving, dominates tiny runs (solve_fewest_terms compiles
# about twice as long at n = 21).
N = 12
MAX_HALF = N




def _labelled_by(kernels, n=64, seed=0):
  """Random 28x28 images labelled by the target itself: its accuracy is exactly 1."""
  rng = np.random.default_rng(seed)
  images = rng.uniform(size=(n, 28, 28, 1)).astype(np.float32)
  logits = evaluation.forward(kernels, jnp.asarray(images.reshape(n, -1)))
  return data_lib.Dataset(images, np.asarray(jnp.argmax(logits, -1), np.int32))


def _blocked_ticket(kernels, coefs, objective="min_error"):
  """The run's direct ticket: find_ticket with the blocked solver."""
  return construction.find_ticket(coefs, kernels, "direct", solve_fn=objectives.blocked_solver(
      objective, EPS))


def _kernels_accuracy(kernels, ds):
  """Accuracy of the network with these kernels (MLP or LeNet5), as the run measures it."""
  return training.accuracy_of(models.model_from_kernels(kernels).apply,
                              (models.params_from_kernels(kernels),), ds.images, ds.labels)


def _network_accuracy(net, masks, ds):
  return training.accuracy_of(evaluation.structured_forward, (net, masks),
                              ds.images.reshape(len(ds.images), -1), ds.labels)


# ------------------------------------------------------------------ blocked vs plain solver


def test_blocked_min_error_is_the_plain_objectives_ticket():
  target = helpers.tiny_target()
  coefs = direct.sample_direct_coefficients(jax.random.PRNGKey(1), target, N)
  ours = _blocked_ticket(target, coefs)
  ref = construction.find_ticket(coefs, target, "direct")
  for a, b in zip(ours.masks["coefficients"], ref.masks["coefficients"]):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(ours.weight_errors + ours.effective_kernels,
                  ref.weight_errors + ref.effective_kernels):
    np.testing.assert_allclose(a, b, atol=1e-6)  # float32 summation order
  assert int(ours.num_params_kept) == int(ref.num_params_kept)
  assert ours.num_params_random == ref.num_params_random == N * (30 + 15)


def test_fewest_terms_keeps_fewer_within_eps():
  target = helpers.tiny_target()
  coefs = direct.sample_direct_coefficients(jax.random.PRNGKey(1), target, N)
  dense = _blocked_ticket(target, coefs, "min_error")
  sparse = _blocked_ticket(target, coefs, "fewest_terms")
  plain = construction.find_ticket(coefs, target, "direct", objective="fewest_terms",
                                   epsilon=EPS)
  for a, b in zip(sparse.masks["coefficients"], plain.masks["coefficients"]):
    np.testing.assert_array_equal(a, b)  # blocked fewest_terms = the plain objective
  for m_min, m_few, e_min, e_few in zip(dense.masks["coefficients"], sparse.masks["coefficients"],
                                        dense.weight_errors, sparse.weight_errors):
    feasible = np.asarray(e_min).T <= EPS
    # Where the optimum is within eps, so is the sparsest subset, with no more terms.
    assert np.all(np.asarray(e_few).T[feasible] <= EPS)
    assert np.all(np.asarray(m_few).sum(-1)[feasible] <= np.asarray(m_min).sum(-1)[feasible])
  assert int(sparse.num_params_kept) < int(dense.num_params_kept)


# ------------------------------------------------------------------ accuracy is the ticket's


def test_ticket_accuracy_is_the_tickets_own_forward():
  target = helpers.tiny_target(sizes=(784, 4, 10), scale=0.1, seed=5)
  ds = _labelled_by(target)
  assert _kernels_accuracy(target, ds) == 1.0
  coefs = direct.sample_direct_coefficients(jax.random.PRNGKey(1), target, N)
  ticket = _blocked_ticket(target, coefs)
  good = _kernels_accuracy(ticket.effective_kernels, ds)
  assert good > 0.9
  # Corrupt the ticket: its accuracy moves, the target's does not.
  bad = ticket.replace(effective_kernels=[-k for k in ticket.effective_kernels])
  assert _kernels_accuracy(bad.effective_kernels, ds) < good - 0.3
  assert _kernels_accuracy(target, ds) == 1.0

  net = rn.sample_random_network(jax.random.PRNGKey(4), (784, 4, 10), 32)
  ticket = sizing.network_ticket(net, target, epsilon=EPS, max_half=MAX_HALF)
  good = _network_accuracy(net, ticket.masks, ds)
  assert good > 0.8
  zeroed = ticket.replace(masks={"u": ticket.masks["u"],
                                 "v": [jnp.zeros_like(v) for v in ticket.masks["v"]]})
  assert _network_accuracy(net, zeroed.masks, ds) < good - 0.3
  assert evaluation.dense_check(net, ticket, ds.images[:4]) < 1e-5
  with pytest.raises(ValueError, match="RandomNetwork"):
    evaluation.pruned_forward_fn(ticket)  # a network ticket's forward needs its network


# ------------------------------------------------------------------ the whole run


def _npz_config(tmp_path, sizes=(784, 4, 10)):
  path = tmp_path / "target.npz"
  targets_lib.save_npz_target(path, helpers.tiny_target(sizes=sizes, scale=0.1, seed=5))
  config = configs.get_config("smoke")
  config.target.npz = str(path)
  config.test_limit = 64
  return config


ROW_FIELDS = {"variant", "objective", "copies", "initial_params", "remaining_params",
              "remaining_ratio", "target_params", "fraction_within_eps", "weights_missing_eps",
              "max_weight_error", "target_accuracy", "ticket_accuracy", "solve_seconds",
              "eval_seconds", "peak_rss_mb", "config", "epsilon", "target"}


def test_run_experiment1_rows_and_files(tmp_path):
  config = _npz_config(tmp_path)
  out = str(tmp_path / "out")
  rows = experiment1.run_experiment1(config, out)
  assert [(r["variant"], r["objective"]) for r in rows] == [
      ("direct", "min_error"), ("direct", "fewest_terms"),
      ("network", "min_error"), ("network", "fewest_terms")]
  for r in rows:
    assert ROW_FIELDS <= set(r)
    assert r["target"]["source"] == "npz"
    assert r["target_params"] == 784 * 4 + 4 * 10
    assert 0 < r["remaining_params"] <= r["initial_params"]
    assert 0.0 <= r["fraction_within_eps"] <= 1.0
    assert r["weights_missing_eps"] == round((1 - r["fraction_within_eps"]) * r["target_params"])
    assert (r["weights_missing_eps"] > 0) == (r["max_weight_error"] > EPS)
    assert 0.0 <= r["ticket_accuracy"] <= 1.0
    assert r["remaining_ratio"] == pytest.approx(r["remaining_params"] / r["target_params"])
  direct = [r for r in rows if r["variant"] == "direct"]
  assert all(r["initial_params"] == N * r["target_params"] for r in direct)
  assert direct[1]["remaining_params"] < direct[0]["remaining_params"]  # fewest terms
  network = [r for r in rows if r["variant"] == "network"]
  assert all(r["dense_check_rel_diff"] < 1e-5 for r in network)
  assert all(r["hidden_widths"] == [c * d for c, d in zip(r["copies"], (784, 4))]
             for r in network)
  lines = open(os.path.join(out, experiment1.RESULTS_FILE)).read().splitlines()
  assert [json.loads(l)["objective"] for l in lines] == [r["objective"] for r in rows]
  assert json.loads(lines[0])["config"]["target"]["npz"] == config.target.npz
  assert "remaining" in open(os.path.join(out, experiment1.TABLE_FILE)).read()
  # The files are written atomically (temporary file + rename) yet get the mode a plain
  # open() would give under the umask, not mkstemp's private 0600.
  umask = os.umask(0)
  os.umask(umask)
  for name in (experiment1.RESULTS_FILE, experiment1.TABLE_FILE):
    assert os.stat(os.path.join(out, name)).st_mode & 0o777 == 0o666 & ~umask
  assert os.path.isfile(os.path.join(out, files.DONE_FILE))  # written last: finished

  # An existing output directory is never clobbered silently.
  with pytest.raises(FileExistsError, match="--overwrite"):
    experiment1.run_experiment1(config, out)
  config.variants = ("direct",)
  config.objectives = ("min_error",)
  rows = experiment1.run_experiment1(config, out, overwrite=True)
  assert len(open(os.path.join(out, experiment1.RESULTS_FILE)).read().splitlines()) == 1


def test_mnist_test_split_alone_with_an_npz_target(tmp_path):
  mnist = tmp_path / "mnist"
  mnist.mkdir()
  rng = np.random.default_rng(0)
  data_lib.write_idx(mnist / "t10k-images-idx3-ubyte.gz",
                     rng.integers(0, 256, (32, 28, 28), dtype=np.uint8))
  data_lib.write_idx(mnist / "t10k-labels-idx1-ubyte.gz",
                     rng.integers(0, 10, 32, dtype=np.uint8))
  config = _npz_config(tmp_path)
  config.dataset, config.data_dir = "mnist", str(mnist)  # no training files: none needed
  config.variants, config.objectives = ("direct",), ("min_error",)
  (row,) = experiment1.run_experiment1(config, str(tmp_path / "out"))
  assert row["dataset"] == "mnist" and row["test_examples"] == 32


def test_weights_missing_eps_are_reported_not_fatal(tmp_path):
  # n = 3 coefficients give only 8 subset sums per row: most weights cannot be met.
  config = _npz_config(tmp_path)
  config.variants, config.objectives = ("direct",), ("min_error",)
  config.direct.copies = 3
  out = tmp_path / "out"
  (row,) = experiment1.run_experiment1(config, str(out))
  assert row["weights_missing_eps"] > 0
  assert row["worst_missing_error"] == row["max_weight_error"] > EPS
  assert row["fraction_within_eps"] == pytest.approx(
      1 - row["weights_missing_eps"] / row["target_params"])
  (saved,) = [json.loads(l) for l in (out / experiment1.RESULTS_FILE).read_text().splitlines()]
  assert saved["weights_missing_eps"] == row["weights_missing_eps"]
  table = (out / experiment1.TABLE_FILE).read_text().splitlines()
  (line,) = [l for l in table if l.startswith("direct")]
  assert f" {row['weights_missing_eps']} " in line and "min_error" in line
  # The run's draw is the construction's sampler with key fold_in(PRNGKey(seed), 1) and the
  # target's range (the benchmark's too).
  kernels, _ = experiment1.load_target(config)
  coefs = direct.sample_direct_coefficients(
      jax.random.fold_in(jax.random.PRNGKey(config.seed), 1), kernels, 3)
  assert row["coefficient_range"] == [float(coefs.low), float(coefs.high)]
  ticket = _blocked_ticket(kernels, coefs)
  assert int(ticket.num_params_kept) == row["remaining_params"]


def test_lenet5_direct_and_network_end_to_end(tmp_path, monkeypatch):
  config = configs.get_config("lenet5")
  assert config.variants == ("direct", "network") and config.target.model == "lenet5"
  # network: the random CNN (constructions.conv), tiny copies (its accuracy is not the point)
  config.network.copies, config.network.max_half = (4,), (4,)
  config.dataset, config.test_limit = "synthetic", 256
  # One epoch = 32 steps on the synthetic set (lr 0.05: above chance after 32 steps),
  # checkpointed under out_dir.
  config.target.epochs, config.target.learning_rate = 1, 0.05
  config.target.checkpoint_dir = ""
  config.direct.copies, config.objectives = N, ("min_error",)
  # Kernels of every accuracy evaluation of the run, in order: the driver turns kernels
  # into a model's params only to measure accuracy (training evaluates its own params).
  evaluated = []

  def recording(kernels):
    evaluated.append([np.asarray(k) for k in kernels])
    return real(kernels)

  real = models.params_from_kernels
  monkeypatch.setattr(models, "params_from_kernels", recording)
  out = str(tmp_path / "out")
  row, net_row = experiment1.run_experiment1(config, out)
  assert net_row["variant"] == "network" and net_row["construction"] == "conv"
  assert net_row["copies"] == [4] * 5 and net_row["dense_check_rel_diff"] < 1e-5
  assert net_row["hidden_widths"] == [4, 24, 1600, 480, 336]  # 4 copies per input channel
  assert net_row["initial_params"] == constructions.get("conv").num_params(
      models.LENET5_KERNEL_SHAPES, 4)
  shapes = [tuple(s) for s in models.LENET5_KERNEL_SHAPES]
  weights = sum(int(np.prod(s)) for s in shapes)
  assert row["target"]["source"] == "trained" and row["model"] == "lenet5"
  assert [tuple(s) for s in row["kernel_shapes"]] == shapes
  assert row["target_params"] == weights and row["initial_params"] == N * weights
  # n = 12 coefficients per output channel/row: 99.1% of the weights within eps measured.
  assert row["fraction_within_eps"] >= 0.99

  # Rebuild the ticket from the checkpoint (restored, not retrained) and the same draw.
  kernels, info = experiment1.load_target(config, workdir=out)
  assert info["source"] == "checkpoint"
  # The same values as host-made arrays: orbax restores device-committed arrays, which
  # would miss every program the run compiled for the trained (uncommitted) kernels.
  kernels = [jnp.asarray(np.asarray(k)) for k in kernels]
  coefs = direct.sample_direct_coefficients(
      jax.random.fold_in(jax.random.PRNGKey(config.seed), 1), kernels, N)
  assert [c.shape for c in coefs.coefficients] == [(s[-1], N) for s in shapes]
  ticket = _blocked_ticket(kernels, coefs)
  assert int(ticket.num_params_kept) == row["remaining_params"]
  for k, approx, err, c, m in zip(kernels, ticket.effective_kernels, ticket.weight_errors,
                                  coefs.coefficients, ticket.masks["coefficients"]):
    assert approx.shape == err.shape == k.shape  # conv kernels stay (kh, kw, in, out)
    np.testing.assert_allclose(err, np.abs(np.asarray(approx) - np.asarray(k)), atol=1e-6)
    # Each output channel's weights are subset sums of that channel's one coefficient row.
    sums = np.einsum("oin,on->io", np.asarray(m, np.float32), np.asarray(c))
    np.testing.assert_allclose(np.asarray(approx).reshape(-1, k.shape[-1]), sums, atol=1e-5)
  errors = np.concatenate([np.asarray(e).ravel() for e in ticket.weight_errors])
  assert row["weights_missing_eps"] == int((errors > EPS).sum())

  # Target accuracy from the target's kernels, ticket accuracy from the approximated ones
  # through the LeNet5 forward (convs included), never from the target.
  assert len(evaluated) == 2
  monkeypatch.undo()
  for a, b in zip(evaluated[0], kernels):
    np.testing.assert_array_equal(a, b)
  for a, b, k in zip(evaluated[1], ticket.effective_kernels, kernels):
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, k)
  test_ds = data_lib.load_dataset("synthetic", "test", limit=256)
  lenet = lambda ks: training.accuracy_of(models.LeNet5().apply,
                                          (models.params_from_kernels(ks),),
                                          test_ds.images, test_ds.labels)
  assert row["ticket_accuracy"] == lenet(ticket.effective_kernels)
  assert row["target_accuracy"] == lenet(kernels)
  assert row["target_accuracy"] > 0.2  # chance is 0.1
  # Almost every weight within eps: the approximated LeNet5 classifies almost alike. The
  # gap depends on the draw (this 1-epoch target is near chance): 0.055 measured here,
  # -0.10 to +0.055 over seeds 0-7 of the same sampler.
  assert abs(row["ticket_accuracy"] - row["target_accuracy"]) <= 0.06

  # The network row's accuracy is the pruned random CNN's own forward, rebuilt from its draw.
  search = sizing.search_copies(jax.random.fold_in(jax.random.PRNGKey(config.seed), 2),
                                kernels, (4,), epsilon=EPS, max_half=[4] * 5, method="conv")
  cnn_ticket = sizing.network_ticket(search.net, kernels, max_half=[4] * 5, method="conv")
  assert int(cnn_ticket.num_params_kept) == net_row["remaining_params"]
  assert net_row["ticket_accuracy"] == training.accuracy_of(
      constructions.get("conv").structured_forward, (search.net, cnn_ticket.masks),
      test_ds.images, test_ds.labels)


def test_default_target_dir_is_a_user_cache(monkeypatch, tmp_path):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  assert configs.get_config("fc2").target.checkpoint_dir == str(
      tmp_path / "cache" / "lth_jax" / "targets")
  monkeypatch.delenv("XDG_CACHE_HOME")
  expected = os.path.join(os.path.expanduser("~"), ".cache", "lth_jax", "targets")
  for preset in ("fc2", "fc4", "lenet5"):
    assert configs.get_config(preset).target.checkpoint_dir == expected
  assert configs.get_config("smoke").target.checkpoint_dir == ""  # tests: <out_dir>/targets
  config = configs.get_config("fc2")
  ckpt = experiment1.target_checkpoint_dir(config)
  assert os.path.dirname(ckpt) == expected  # one subdirectory per training configuration
  config.target.epochs = 11
  assert experiment1.target_checkpoint_dir(config) != ckpt


@pytest.mark.parametrize("field,value,match", [
    ("epsilon", 0.0, "epsilon"),
    ("variants", ("direct", "bogus"), "variants"),
    ("objectives", ("fastest",), "objectives"),
    ("direct.copies", 40, "direct.copies"),
    ("network.copies", (0, 8), "network.copies"),
    ("network.max_half", (31,), "network.max_half"),  # beyond solve_fewest_terms' MAX_N
    ("network.max_half", (-1, 4), "network.max_half"),
    ("download", True, "synthetic"),  # the smoke preset's synthetic data: nothing to fetch
    ("download_url", "ftp://x/", "download_url"),
    ("target.model", "resnet", "lenet5"),
])
def test_validate_config_names_the_field(field, value, match):
  config = configs.get_config("smoke")
  node = config
  *parents, leaf = field.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ConfigError, match=match) as info:
    experiment1_checks.validate_config(config)
  assert info.value.field == field


def test_names_accepts_command_line_forms():
  assert experiment1_checks.names(("direct,",)) == ("direct",)
  assert experiment1_checks.names(("direct,network",)) == ("direct", "network")
  assert experiment1_checks.names("min_error") == ("min_error",)


# ------------------------------------------------------------------ the entry point


def _run(*args):
  # No value of these runs is checked, only rows, files and messages: XLA's backend
  # optimisation off cuts the fresh process's compile time.
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
             XLA_FLAGS=" ".join([os.environ.get("XLA_FLAGS", ""),
                                 "--xla_backend_optimization_level=0"]).strip())
  return subprocess.run([sys.executable, "-m", "experiments.subset_sum", *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=600)


def test_entry_point_smoke_writes_jsonl(tmp_path):
  out = tmp_path / "run"
  # One variant and objective: a fresh process compiles everything again (fewest_terms'
  # compile alone takes tens of seconds on a loaded 2-core machine); every variant and
  # objective of the smoke preset runs in test_run_experiment1_rows_and_files.
  proc = _run(f"--out_dir={out}", "--config.objectives=min_error", "--config.variants=direct")
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = [json.loads(l) for l in (out / experiment1.RESULTS_FILE).read_text().splitlines()]
  assert [(r["variant"], r["objective"]) for r in rows] == [("direct", "min_error")]
  assert rows[0]["config"]["preset"] == "smoke"
  assert rows[0]["target"]["source"] == "trained"
  last = [l for l in proc.stderr.splitlines() if l.strip()][-1]
  assert str(out) in last
  assert "remaining" in proc.stdout  # the printed table


@pytest.mark.parametrize("args,flag", [
    (["--config.epsilon=2"], "--config.epsilon"),
    (["--config.nosuchfield=1"], "--config.nosuchfield"),
    (["--config.network.nope=1"], "--config.network.nope"),
    (["--config.variants=direct,bogus"], "--config.variants"),
    (["--bogus_flag=1"], "bogus_flag"),
    (["--config=nosuchpreset"], "--config"),
    (["--dataset=mnist"], "data_dir"),
])
def test_bad_flags_give_one_line(tmp_path, monkeypatch, args, flag):
  # In this process (helpers.invoke: runpy, as `python -m` runs it), not a fresh
  # interpreter per case; test_existing_out_dir_refused_without_overwrite is a real process.
  monkeypatch.chdir(REPO)
  code, stderr = helpers.invoke("experiments.subset_sum", f"--out_dir={tmp_path / 'x'}", *args)
  assert code != 0
  lines = [l for l in stderr.splitlines() if l.strip()]
  assert len(lines) == 1, stderr
  assert flag in lines[0] and "Traceback" not in stderr
  assert not (tmp_path / "x").exists()


def test_existing_out_dir_refused_without_overwrite(tmp_path):
  out = tmp_path / "run"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  proc = _run(f"--out_dir={out}")
  assert proc.returncode != 0
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and "--overwrite" in lines[0]
  assert sorted(os.listdir(out)) == ["keep.txt"]


def test_lenet5_bias_network_row_counts_every_weight_and_bias(tmp_path, monkeypatch):
  """The lenet5_bias preset's driver path (target loaded, not trained, to stay cheap): the
  conv construction with bias units, every bias one more instance, the row's statistics
  over weights and biases, the pruned CNN checked against its dense masked form."""
  config = configs.get_config("lenet5_bias")
  assert config.variants == ("network",) and config.target.use_bias
  config.network.copies, config.network.max_half = (6,), (6,)
  config.dataset, config.test_limit, config.objectives = "synthetic", 64, ("min_error",)
  shapes = models.LENET5_KERNEL_SHAPES
  layers = [{"kernel": 0.1 * jax.random.normal(jax.random.fold_in(jax.random.key(3), i), s),
             "bias": 0.05 * jax.random.normal(jax.random.fold_in(jax.random.key(4), i),
                                              (s[-1],))} for i, s in enumerate(shapes)]
  monkeypatch.setattr(experiment1, "load_target",
                      lambda config, **kw: (layers, {"source": "test"}))
  (row,) = experiment1.run_experiment1(config, str(tmp_path / "out"))
  assert row["construction"] == "conv" and row["target_has_biases"]
  num_biases = sum(s[-1] for s in shapes)
  assert row["num_biases"] == num_biases
  assert row["target_params"] == sum(int(np.prod(s)) for s in shapes) + num_biases
  assert row["initial_params"] == constructions.get("conv").num_params(shapes, 6,
                                                                       bias_units=True)
  assert row["dense_check_rel_diff"] < 1e-5
  assert 0 <= row["biases_missing_eps"] <= row["weights_missing_eps"]
  assert row["max_weight_error"] >= row["max_bias_error"] >= 0
