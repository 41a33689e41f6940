"""lth_jax: strong lottery tickets by exact SubsetSum (Pensia et al., NeurIPS 2020), in JAX.

The public API (pure functions over pytrees of arrays; PRNG keys passed explicitly), curated
here one name per line and listed in ``__all__``:

* ``solve_subset_sum`` / ``solve_fewest_terms``: exact vmapped SubsetSum objectives.
* ``sample_random_network``, ``dense_params``: the depth-2l random network of Theorem 1.
* ``find_ticket``: masks that prune a random object to a target, for any registered
  construction (``lth_jax.constructions``: "network", "single", "direct", "bias").
* Targets are lists of kernels or ``{"kernel", "bias"}`` layers (``split_layers``);
  ``"bias"`` prunes a ``BiasNetwork`` (``sample_bias_network``) to targets with biases.
* ``forward``, ``structured_forward``, ``apply_masks``, ``approximation_error``.
* ``sweep_targets`` / ``run_sweep``: width x seed grids as one XLA program.

The stages' modules (``lth_jax.data``, ``training``, ``distributed``, ``streaming``, ``stats``,
``report``, ``run``, ...) are imported on first attribute access: several pull in flax,
optax or orbax, which cost seconds to import.
"""

import importlib

from lth_jax.subset_sum import MAX_N, SubsetSumResult, default_key_format, solve_subset_sum
from lth_jax.fewest_terms import FewestTermsResult, solve_fewest_terms
from lth_jax.random_net import (RandomNetwork, dense_params, num_params, sample_random_network,
                                truncate_copies)
from lth_jax.targets import check_target, random_target, split_layers, target_layer_sizes
from lth_jax.constructions.bias import BiasNetwork
from lth_jax.constructions.bias import sample as sample_bias_network
from lth_jax.constructions.direct import DirectCoefficients, sample_direct_coefficients
from lth_jax.constructions.network import default_max_half
from lth_jax.construction import METHODS, Ticket, find_ticket
from lth_jax.masks import (apply_masks, count_kept, dense_masks, from_jaxpruner, load_masks_npz,
                           save_masks_npz, to_jaxpruner)
from lth_jax.targets import forward
from lth_jax.evaluation import (ErrorReport, analytic_bound, approximation_error,
                                dense_pruned_params, pruned_forward_fn, structured_forward,
                                sup_output_error)
from lth_jax.sweep import SweepResult, copies_needed, sweep_targets
from lth_jax.sweep import sweep as run_sweep  # `lth_jax.sweep` stays the module
from lth_jax.theory import construction_size, counting_lower_bound, malach_width_factor

__version__ = "0.1.0"

__all__ = [
    # solve
    "MAX_N", "SubsetSumResult", "default_key_format", "solve_subset_sum",
    "FewestTermsResult", "solve_fewest_terms",
    # sample
    "RandomNetwork", "dense_params", "num_params", "sample_random_network", "truncate_copies",
    "check_target", "random_target", "split_layers", "target_layer_sizes", "forward",
    # mask
    "DirectCoefficients", "sample_direct_coefficients", "default_max_half",
    "BiasNetwork", "sample_bias_network",
    "METHODS", "Ticket", "find_ticket",
    "apply_masks", "count_kept", "dense_masks", "from_jaxpruner", "load_masks_npz",
    "save_masks_npz", "to_jaxpruner",
    # evaluate
    "ErrorReport", "analytic_bound", "approximation_error", "dense_pruned_params",
    "pruned_forward_fn", "structured_forward", "sup_output_error",
    "construction_size", "counting_lower_bound", "malach_width_factor",
    # programs
    "SweepResult", "copies_needed", "sweep_targets", "run_sweep",
]

# Submodules reachable as attributes without an explicit import (see the module doc).
_LAZY = ("_checks", "files", "progress", "checkpoints", "sharding",
         "targets", "random_net", "data", "models",
         "mitm", "mitm_keys", "subset_sum", "fewest_terms", "objectives", "distributed",
         "constructions", "construction", "masks", "supermask",
         "evaluation", "theory", "lueker", "sizing", "stats",
         "grid_program", "sweep", "streaming", "stream_sources", "edge_popup", "training",
         "report", "run", "configs")


def __getattr__(name):
  # Experiment modules pull in flax/optax/orbax: import them only when asked for.
  if name in _LAZY:
    return importlib.import_module(f"lth_jax.{name}")
  raise AttributeError(f"module 'lth_jax' has no attribute {name!r}")
