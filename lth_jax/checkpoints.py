"""One orbax checkpoint wrapper: a pytree state plus JSON metadata per step.

Used by target training (per epoch) and edge-popup sweeps (per epoch). The metadata holds
a ``settings`` dict; restoring a checkpoint written with other settings raises instead of
silently mixing two runs.

Infrastructure stage: imports no lth_jax module (orbax is imported on first use: it costs
seconds).
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import jax


class SettingsMismatch(ValueError):
  """A checkpoint directory holds a run written with other settings."""


_STEP_METADATA = "_CHECKPOINT_METADATA"  # orbax writes it into every finished step


def check_restorable(root: str | os.PathLike) -> None:
  """Refuses garbage where orbax would look for steps, before a run tries to restore it
  (orbax reports it as a ``KeyError`` deep inside a restore).

  Every step directory (a child named by digits) of ``root`` and of its subdirectories
  must hold orbax's step metadata as JSON; unfinished saves (orbax's temporary names) are
  ignored, as orbax does.

  Raises:
    ValueError: naming the step directory and the way out.
  """
  root = pathlib.Path(root).expanduser()
  parents = [root] + ([p for p in root.iterdir() if p.is_dir()] if root.is_dir() else [])
  for parent in parents:
    if not parent.is_dir():
      continue
    for step in parent.iterdir():
      if not (step.is_dir() and step.name.isdigit()):
        continue
      try:
        json.loads((step / _STEP_METADATA).read_text())
      except (OSError, ValueError):
        raise ValueError(f"{step}: not a restorable orbax checkpoint (no readable "
                         f"{_STEP_METADATA}); remove it to start that work again") from None


class Checkpoints:
  """orbax ``CheckpointManager`` of ``{state pytree} + {meta JSON}`` per integer step.

  Args:
    directory: where the steps live (created).
    max_to_keep: the newest steps kept on disk.
    settings: JSON-able dict stored in every step's meta as ``"config"`` (the key trained
      targets cached before this module existed use, so they stay readable); ``latest``
      refuses a step whose settings differ (``SettingsMismatch``, naming the fields).
  """

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 1,
               settings: dict | None = None):
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    self._ocp = ocp
    self.settings = settings
    self.manager = ocp.CheckpointManager(
        os.path.abspath(os.fspath(directory)),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False))

  @property
  def directory(self):
    return self.manager.directory

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore_meta(self, step: int) -> dict:
    ocp = self._ocp
    return self.manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"]

  def restore_state(self, step: int, template: Any) -> Any:
    """The state of ``step``, with the shapes and dtypes of ``template``."""
    ocp = self._ocp
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
    return self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))["state"]

  def latest(self, template: Any) -> tuple[Any, dict, int] | None:
    """``(state, meta, step)`` of the newest step, or None when there is none.

    Raises:
      SettingsMismatch: the step was written with other ``settings``.
    """
    step = self.latest_step()
    if step is None:
      return None
    meta = self.restore_meta(step)
    if self.settings is not None:
      saved = meta.get("config") or {}
      diff = {k: (saved.get(k), v) for k, v in self.settings.items() if saved.get(k) != v}
      if diff:
        raise SettingsMismatch(
            f"checkpoint in {self.directory} was written with other settings "
            f"(saved, wanted): {diff}; use another directory or remove it")
    return self.restore_state(step, template), meta, step

  def save(self, step: int, state: Any, meta: dict | None = None) -> None:
    """Saves ``state`` and ``meta`` (plus ``settings``) as ``step``; returns when written."""
    ocp = self._ocp
    meta = dict(meta or {})
    if self.settings is not None:
      meta["config"] = self.settings
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False
