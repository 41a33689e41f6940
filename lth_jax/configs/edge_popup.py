"""Experiment 2 (edge-popup on random networks): configuration presets.

get_config("quick"): a smoke run (all three architectures and four variants, four pruning
  levels, one epoch on 1,280 training and 2,000 test examples), about two minutes on 2 CPU cores.
get_config("cpu"): the measured CPU run reported in the README: all 14 levels, 2 epochs on the
  first 6,400 training examples, the full test set.
get_config("paper"): the official settings (full data, 14 levels, 50 epochs; the paper also
  ran 30, 100, 125 and 150: override with --config.epochs=N).

Pruning levels are given as the paper's fraction REMOVED (`removed_fractions`); the driver
converts them to `keep_fraction` = 1 - removed, the fraction KEPT
(`lth_jax.edge_popup.keep_fractions_from_removed`).

Pure data: imports nothing from lth_jax.
"""

import ml_collections

PRESETS = ("quick", "cpu", "paper")
# The paper's pruning grid, as the fraction of weights REMOVED per FC tensor.
PAPER_REMOVED_FRACTIONS = (0.0, 0.01, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95,
                           0.975, 0.98, 0.99)


def get_config(preset: str = "quick") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; expected one of {PRESETS}")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.archs = ("fc2", "fc4", "lenet5")
  c.variants = ("linear", "relu", "wide", "dense")
  c.removed_fractions = PAPER_REMOVED_FRACTIONS  # fraction REMOVED per FC tensor
  c.seeds = (0,)               # model seeds: weights and initial scores
  c.data_seed = 0              # order of the training examples, per epoch
  c.hidden = 500               # target hidden width (FC2/FC4); LeNet5 is 400-120-84-10
  c.redundancy = 5             # r copies per input in the redundant layers
  c.epochs = 50
  c.batch_size = 64
  c.eval_batch_size = 1000
  c.train_limit = 0            # first N training examples (0 = all 60,000)
  c.test_limit = 0             # first N test examples (0 = all 10,000)
  c.topk_method = "bisect"     # exact top-k: "bisect" (fast) or "sort" (reference)
  c.export_masks = True        # final masks as .npz (jaxpruner layout, bit-packed)
  c.keep_checkpoints = False   # keep a finished sweep's last orbax checkpoint

  c.optim = ml_collections.ConfigDict()
  c.optim.lr_fc = 0.1
  c.optim.lr_lenet5 = 0.01
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4  # on the scores (on the weights for the dense baseline)

  if preset == "quick":
    c.removed_fractions = (0.0, 0.5, 0.9, 0.99)
    c.epochs = 1
    c.train_limit = 1280
    c.test_limit = 2000
  elif preset == "cpu":
    c.epochs = 2
    c.train_limit = 6400
  return c
