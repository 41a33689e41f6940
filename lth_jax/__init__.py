"""lth_jax: strong lottery tickets by exact SubsetSum (Pensia et al., NeurIPS 2020), in JAX.

Public API (pure functions over pytrees of arrays; PRNG keys passed explicitly).
"""

from lth_jax.subset_sum import MAX_N, SubsetSumResult, default_key_format, solve_subset_sum
from lth_jax.random_net import (RandomNetwork, dense_params, num_params, sample_random_network,
                                truncate_copies)
from lth_jax.construction import (METHODS, DirectCoefficients, Ticket, default_max_half,
                                  find_ticket, sample_direct_coefficients, target_layer_sizes)
from lth_jax.masks import (apply_masks, count_kept, dense_masks, from_jaxpruner, load_masks_npz,
                           save_masks_npz, to_jaxpruner)
from lth_jax.evaluation import (ErrorReport, analytic_bound, approximation_error,
                                dense_pruned_params, forward, pruned_forward_fn,
                                structured_forward, sup_output_error)

__version__ = "0.1.0"
