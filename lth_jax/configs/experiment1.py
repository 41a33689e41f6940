"""Experiment 1 (every weight of a trained target by exact SubsetSum): configuration presets.

get_config("smoke"): a 784-32-10 target trained for one epoch on the synthetic dataset, both
  variants and both objectives; seconds on 2 CPU cores (the tests run it).
get_config("fc2"): the paper's setting: FC2 (784-500-10, 397,000 weights), eps = 0.01,
  n = 21 coefficients per weight for "direct", on Fashion-MNIST (MNIST with
  --dataset=mnist --data_dir=DIR).
get_config("fc4"): the same for FC4 (784-500-500-500-10, 897,000 weights).
get_config("fc2_bias"): FC2 trained WITH biases (Fashion-MNIST), "network" variant only:
  the "bias" construction (network + bias units, Fischer, Gadhikar & Burkholz 2021) makes
  every weight and every bias a subset sum.
get_config("lenet5"): LeNet5 (SPEC section 6; 61,470 weights: both conv kernels and the
  three FC kernels). "direct": per output channel of each conv kernel (kh, kw, in, out) and
  per output unit of each FC kernel, one coefficient vector reused along it; "network": the
  random CNN of constructions.conv (a 1x1 and a kh x kw conv per conv layer) pruned whole.
get_config("lenet5_bias"): LeNet5 trained WITH biases, "network" variant only: the random
  CNN of constructions.conv with bias units (bias channels read at one in-image kernel tap),
  every weight and every bias a subset sum.

Trained targets are checkpointed (orbax) under target.checkpoint_dir, by default
default_target_dir() = $XDG_CACHE_HOME/lth_jax/targets (~/.cache/lth_jax/targets), one
subdirectory per training configuration, and reused by every later run on this machine.

Pick one with --config=lth_jax/configs/experiment1.py:fc2 (or --config=fc2) and override
fields with --config.<field>=..., e.g. --config.network.copies=(16,24,32).
"""

import os

import ml_collections

PRESETS = ("smoke", "fc2", "fc4", "lenet5", "fc2_bias", "lenet5_bias")


def default_target_dir() -> str:
  """Where trained targets are cached: $XDG_CACHE_HOME/lth_jax/targets, expanded.

  A per-user cache rather than the output directory, so a target trained once is reused by
  every later run (and the benchmark) whatever its --out_dir.
  """
  # XDG: an unset or empty XDG_CACHE_HOME means ~/.cache.
  cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
  return os.path.abspath(os.path.expanduser(os.path.join(cache, "lth_jax", "targets")))


def _lplus1_group() -> ml_collections.ConfigDict:
  """Burkholz 2022's depth-L+1 construction (variant "lplus1", not in the default variants).
  Its random layers grow like copies^2: FC2 at 40 copies is 6.5e8 parameters (2.6 GB of
  float32) and 3.1e7 SubsetSum instances, refused by max_random_params; the smoke MLP runs."""
  g = ml_collections.ConfigDict()
  g.copies = 40                 # copies per input of every target layer
  g.max_half = 0                # instance size (0 = default_max_half(copies))
  g.distribution = "uniform"
  g.dense_check_batch = 8
  g.max_random_params = 100_000_000
  return g


def get_config(preset: str = "smoke") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; expected one of {PRESETS}")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0                    # random coefficients / random network
  c.epsilon = 0.01              # per-weight tolerance |w - subset sum| <= epsilon
  c.variants = ("direct", "network")
  c.objectives = ("min_error", "fewest_terms")
  c.dataset = "fashion_mnist"   # fashion_mnist | mnist | kmnist | synthetic
  c.data_dir = ""               # "" = the dataset's default location
  c.download = False            # fetch missing standard IDX files into data_dir (opt-in)
  c.download_url = ""           # "" = the dataset's public mirror (data.DEFAULT_BASE_URLS)
  c.test_limit = 0              # first N test examples (0 = the whole test split)
  c.eval_batch_size = 1000

  c.target = ml_collections.ConfigDict()
  c.target.model = "fc2"        # fc2 | fc4 | lenet5 | mlp (784-widths, bias-free)
  c.target.widths = (500, 10)   # only for model = "mlp"
  c.target.use_bias = False     # train with biases (the network variant then uses "bias")
  c.target.npz = ""             # import this .npz target instead of training (see targets.py)
  c.target.npz_layout = "torch"  # torch: (d_out, d_in) matrices; jax: (d_in, d_out) kernels
  c.target.checkpoint_dir = default_target_dir()  # "" = <out_dir>/targets
  c.target.epochs = 10
  c.target.learning_rate = 0.1
  c.target.batch_size = 64
  c.target.momentum = 0.9
  c.target.weight_decay = 5e-4
  c.target.seed = 0

  c.direct = ml_collections.ConfigDict()
  c.direct.copies = 21          # n = 3 * round(log2(1 / epsilon)) coefficients per weight

  c.network = ml_collections.ConfigDict()
  # Copies per input tried in increasing order; per layer the smallest whose every weight
  # is within epsilon is used (nested widths: copy k is the same draw at every size).
  c.network.copies = (16, 20, 24, 28, 32, 40, 48)
  # SubsetSum size per sign half, one for all layers or one per layer; 0 = default_max_half
  # (copies) capped at the objectives' maximum. Cost per instance grows like 2^(m/2).
  c.network.max_half = (0,)
  c.network.distribution = "uniform"
  c.network.dense_check_batch = 8  # structured vs dense forward on this many test images

  c.lplus1 = _lplus1_group()

  c.solver = ml_collections.ConfigDict()
  c.solver.block_keys = 1 << 24  # meet-in-the-middle keys per progress block
  _apply_preset(c, preset)
  return c


def _apply_preset(c: ml_collections.ConfigDict, preset: str) -> None:
  """Sets what ``preset`` changes from the defaults (``get_config``)."""
  if preset == "smoke":
    c.dataset = "synthetic"
    c.target.model = "mlp"
    c.target.widths = (32, 10)
    c.target.epochs = 1
    c.target.checkpoint_dir = ""
    # Compiling, not solving, is what a tiny run spends its time on: every instance has 12
    # coefficients (direct's n; network halves padded to max_half = 12), one compiled
    # solver per objective.
    c.direct.copies = 12
    c.network.copies = (16, 24)
    c.network.max_half = (12,)
    c.network.dense_check_batch = 4
    c.lplus1.update(copies=24, max_half=12, dense_check_batch=4)
    c.test_limit = 256
  elif preset in ("fc2", "fc2_bias"):
    # Measured on the trained FC2 (10 epochs, Fashion-MNIST): 56 copies per input meet
    # eps on every weight of both layers. Layer 1 (392,000 weights) is capped at m = 24
    # (enough at 56 copies, and 2^(m/2) is the cost); layer 2 (5,000 weights) at 30
    # (with m <= 28 one outlier weight misses at any number of copies).
    c.network.copies = (16, 24, 32, 40, 48, 56, 64)
    c.network.max_half = (24, 30)
    if preset == "fc2_bias":  # + one instance per bias over the bias units ("bias")
      c.target.use_bias, c.variants = True, ("network",)
  elif preset == "fc4":
    c.target.model = "fc4"
    c.target.widths = (500, 500, 500, 10)
    c.network.copies = (16, 24, 32, 40, 48, 56, 64, 80)
    c.network.max_half = (24, 24, 24, 30)
  elif preset in ("lenet5", "lenet5_bias"):
    c.target.model = "lenet5"
    c.target.learning_rate = 0.01  # SPEC section 6's LeNet5 rate (0.1 is for the FC nets)
    c.variants = ("direct", "network")  # network: the random CNN of constructions.conv
    c.network.copies = (16, 24, 32, 40, 48, 56, 64)
    # conv1, conv2, fc1, fc2, fc3: the small layers can afford the largest instances.
    c.network.max_half = (30, 30, 24, 24, 30)
    if preset == "lenet5_bias":  # + bias units (conv); direct builds no biases
      c.target.use_bias, c.variants = True, ("network",)
