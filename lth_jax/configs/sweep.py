"""Width sweeps (error vs copies, over-parameterisation vs d) and the Lueker check: presets.

get_config("default"): random spectral-norm-1 targets d x d (d = 4, 8, 16) and permutation
  targets 4-4, 4-4-4, 4-4-4-4 (depth axis), network/single widths 8..48 (step 8, sign halves
  capped at 20), direct 4..20, 32 seeds, success at eps = 0.2 .. 0.01 from one grid, the
  log-law fit. Measured 2026-12-03 on the idle 2-core machine: 49.9 s wall, 65 s CPU
  (benchmarks/bench_sweep.py splits it: compilation 26 s of it).
get_config("quick"): a tiny grid for tests (seconds).
get_config("paper"): full size: random d = 4..64 and 16-16-16-16, permutation targets of
  depth 1..4 and d = 4..64, widths 8..64 in steps of 4 (cap 24), 32 seeds, 2048 points /
  30 ascent steps, one program per target (each saved as it finishes: resumable), no Lueker
  check (its own preset). Hours on 2 CPU cores (see README).
get_config("constructions"): network vs lplus1 (Burkholz 2022's depth L+1), single and
  direct at the same eps (0.01 primary) on ONE fixed random target 8-8-8 (depth 2, where
  L + 1 = 3 < 2L = 4), widths 8..64 (sign halves capped at 20), 16 seeds; tables.txt adds
  the constructions table (depth, copies needed, random and kept parameters). See
  docs/runs/sweep_constructions.
get_config("lueker"): only the Lueker coverage check at SPEC section 2's sizes (U[-1, 1]
  n = 12/16/20, products n = 20/28/36/44; 100 trials, epsilon 0.01): 6.3 CPU-minutes, 18.6
  minutes wall on 2 heavily shared CPU cores, three quarters of it products n = 44.

Select with --config=lth_jax/configs/sweep.py:quick (the default file is this one with
"default"); override fields with e.g. --config.sweep.widths="(2,4,8)". On several devices:
--config.devices.shard=True (multi-host: --config.devices.distributed=True).
"""

import ml_collections

PRESETS = ("default", "quick", "paper", "lueker", "constructions")


def _base() -> ml_collections.ConfigDict:
  """The "default" preset; the others override some of its fields (``_OVERRIDES``)."""
  c = ml_collections.ConfigDict()
  c.preset = "default"
  c.seed = 0  # targets, random networks, coefficients and evaluation points derive from it

  c.sweep = ml_collections.ConfigDict()
  c.sweep.methods = ("network", "direct", "single")
  # copies per input. Success jumps from ~0 to ~1 within ~16 copies, so a step of 8 reads
  # copies needed to +-4 at a quarter of the solver work of a step of 2.
  c.sweep.widths = (8, 16, 24, 32, 40, 48)
  # "direct" solves one instance of `width` coefficients per weight (cost ~2^(w/2)); its
  # error hits float32 resolution near w = 24, so it gets its own (smaller) widths.
  c.sweep.direct_widths = (4, 6, 8, 10, 12, 14, 16, 20)
  # Success fractions over this many seeds: a 95% Wilson interval is about +-0.15 wide.
  c.sweep.num_seeds = 32
  c.sweep.epsilon = 0.05       # the primary eps: tables, summary, "within epsilon"
  # The eps axis: success at each is read from the same sup errors (the solve does not
  # depend on eps), so it costs no compilation and no solving.
  c.sweep.epsilons = (0.2, 0.1, 0.05, 0.02, 0.01)
  c.sweep.num_points = 256     # random unit vectors for the sup-error estimate
  c.sweep.ascent_steps = 10    # projected gradient ascent steps from the worst 16 of them
  # network SubsetSum size per sign half (0: default_max_half(w), which reaches 28 at
  # w = 48: 2^15 keys per instance). One size for the whole grid; a half with more members
  # prunes the surplus (allowed: pruning more is always allowed).
  c.sweep.max_half = 20
  c.sweep.distribution = "uniform"
  c.sweep.eval_batch = 4       # grid points evaluated together
  # One XLA program per target instead of one for all: each target's result is saved as it
  # finishes (a killed run resumes from there) at the cost of a compilation per target.
  c.sweep.program_per_target = False
  # XLA CPU backend optimisation level for the one grid program (-1: XLA's default). Level 1
  # about halves compile time (most of a small sweep's wall time) for ~30% slower solving.
  c.sweep.xla_opt_level = 1
  # tables.txt: the constructions side by side (depth, copies, random and kept parameters)
  c.sweep.constructions_table = False

  c.targets = ml_collections.ConfigDict()
  # layer sizes (d_0, ..., d_l) of random Gaussian targets (spectral norm per layer)
  c.targets.sizes = ((4, 4), (8, 8), (16, 16))
  # permutation targets (lth_jax.targets.permutation_target): norm-preserving through the
  # ReLUs, so per-layer errors add up; the depth axis l = 1..3.
  c.targets.permutation_sizes = ((4, 4), (4, 4, 4), (4, 4, 4, 4))
  c.targets.spectral_norm = 1.0
  # > 0: every random and permutation target layer gets a Gaussian bias of this Euclidean
  # norm (targets.with_random_biases), so only methods with biases ("bias") can run.
  c.targets.bias_scale = 0.0
  c.targets.npz = ""            # also sweep this .npz target (lth_jax.targets.load_npz_target)
  c.targets.npz_layout = "torch"

  c.data = ml_collections.ConfigDict()
  c.data.name = ""              # "" (none) | fashion_mnist | mnist | kmnist | synthetic
  c.data.data_dir = ""          # "" = the dataset's default location
  c.data.limit = 2000           # test examples for accuracy
  # With a dataset and no npz target: train a bias-free 784-hidden-10 MLP target first.
  c.data.train_hidden = (32,)
  c.data.train_epochs = 2
  c.data.train_limit = 12800
  c.data.learning_rate = 0.05

  c.lueker = ml_collections.ConfigDict()
  c.lueker.trials = 0           # 0: skip the Lueker check
  c.lueker.epsilon = 0.01
  c.lueker.uniform_sizes = (4, 6, 8, 10, 12, 14, 16, 18, 20)
  c.lueker.product_sizes = (12, 16, 20, 24)
  c.lueker.spacing = 0.0025     # grid step of z (<< epsilon)

  c.devices = ml_collections.ConfigDict()
  # Split every grid's seeds over all devices (lth_jax.distributed; the seed count is padded
  # to a multiple of the device count). Same results, float32 reductions up to the last bit.
  c.devices.shard = False
  # Multi-host: jax.distributed.initialize() first; implies shard. Only process 0 writes.
  # Managed clusters (TPU pods, SLURM, ...) supply the arguments; elsewhere give all three:
  c.devices.distributed = False
  c.devices.coordinator_address = ""  # "host:port" of process 0 ("": from the environment)
  c.devices.num_processes = 0         # 0: from the environment
  c.devices.process_id = -1           # -1: from the environment
  return c


# preset -> {"group.field": value} replacing the default's values.
_OVERRIDES = {
    "default": {},
    "quick": {
        "sweep.widths": (2, 4, 8),
        "sweep.direct_widths": (2, 4, 6),  # 6 = default_max_half(8): one solver size
        "sweep.num_seeds": 2,
        "sweep.epsilons": (0.2, 0.05),
        "sweep.max_half": 0,
        "sweep.num_points": 64,
        "sweep.ascent_steps": 3,
        "sweep.xla_opt_level": 0,  # tiny grid: compile time is everything
        "targets.sizes": ((3, 3), (4, 2)),
        "targets.permutation_sizes": (),
        "lueker.trials": 8,
        "lueker.epsilon": 0.05,
        "lueker.uniform_sizes": (6,),
        "lueker.product_sizes": (),
        "lueker.spacing": 0.0125,
    },
    "paper": {
        # step 4 everywhere: the level-0.9 copies needed sit in the transition (24-48 at
        # d <= 16), where a step of 8 put 29 of 30 default points on 40 or 48.
        "sweep.widths": tuple(range(8, 65, 4)),
        "sweep.direct_widths": (4, 6, 8, 10, 12, 14, 16, 18, 20),
        "sweep.num_seeds": 32,
        # benchmarks/bench_sup_error.py: 256 points / 10 steps miss up to 8% of the sup at
        # d = 16 (none of network's success fractions change); d reaches 64 here.
        "sweep.num_points": 2048,
        "sweep.ascent_steps": 30,
        "sweep.max_half": 24,
        "sweep.xla_opt_level": -1,
        "sweep.program_per_target": True,
        "targets.sizes": ((4, 4), (8, 8), (16, 16), (32, 32), (64, 64), (16, 16, 16, 16)),
        "targets.permutation_sizes": ((4, 4), (4, 4, 4), (4, 4, 4, 4), (4, 4, 4, 4, 4),
                                      (8, 8), (16, 16), (32, 32), (64, 64)),
        # The Lueker check has its own preset ("lueker", 18.6 min wall): not repeated here.
        "lueker.trials": 0,
    },
    "lueker": {
        "sweep.methods": (),
        "targets.sizes": (),
        "targets.permutation_sizes": (),
        # SPEC section 2's reference sizes (lueker.REFERENCE), 100 trials as there.
        "lueker.trials": 100,
        "lueker.uniform_sizes": (12, 16, 20),
        "lueker.product_sizes": (20, 28, 36, 44),
    },
    "constructions": {
        "sweep.methods": ("network", "lplus1", "single", "direct"),
        "sweep.widths": (8, 16, 24, 32, 40, 48, 56, 64),
        "sweep.num_seeds": 16,
        "sweep.epsilon": 0.01,
        "sweep.constructions_table": True,
        "targets.sizes": ((8, 8, 8),),
        "targets.permutation_sizes": (),
    },
}


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
  preset = preset or "default"
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
  c = _base()
  c.preset = preset
  for path, value in _OVERRIDES[preset].items():
    group, field = path.split(".")
    c[group][field] = value
  return c
