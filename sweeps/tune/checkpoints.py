"""Tune's saved experiment state and the trials' checkpoints: the one module
that uses Ray Tune's private internals.

Those are: the format of the experiment state (experiment_state-*.json, one
entry per trial: its JSON state and its run metadata), `_TrainingRunMetadata`
and its checkpoint manager's private fields (`_checkpoint_results`,
`_latest_checkpoint_result`), `_TrainingResult`, and where a live trial keeps
its run metadata. A Ray release that changes them breaks this file only.

Ray is imported inside the functions that need its classes: `saved_trials`
reads the state as plain JSON, so `dynsweep status` needs neither Ray nor torch.

- `saved_trials`: each trial's name, id, state, config and last result;
- `prune_trial` (`PruneCheckpoints`, at each checkpoint) and
  `prune_saved_checkpoints` (after `fit`): delete the checkpoints nothing
  refers to, never the one the saved state names;
- `settle_ended_trials` and `repair_checkpoints`: the saved state rewritten
  before a restore (trials that ended after it was saved; checkpoints gone);
- `restart_point`: where a failed trial starts again, for the progress lines.
"""
from __future__ import annotations

import fnmatch
import json
import re
import sys
from dataclasses import dataclass
from typing import Any

from sweeps import storage as files
from sweeps.context import REPORTED_FILE, member_names


# A trial's checkpoints are <experiment>/<trial>/checkpoint_NNNNNN, numbered
# in order. Restoring a sweep reads the newest experiment_state-*.json in the
# experiment folder (saved every few seconds, not at every checkpoint); each
# trial's entry there names the checkpoint it restores from.
_CHECKPOINT = re.compile(r"checkpoint_(\d+)$")


def _checkpoint_index(path: str | None) -> int | None:
    match = _CHECKPOINT.search(path.rstrip("/")) if path else None
    return int(match.group(1)) if match else None


def saved_state(exp: str, fs=None) -> tuple[str, dict[str, Any]] | None:
    """(path, content) of the experiment state a restore would read, or None."""
    from pyarrow.fs import FileSelector

    if fs is None:
        fs, exp = files.filesystem(exp)
    names = [i.base_name for i in fs.get_file_info(FileSelector(exp, allow_not_found=True))]
    newest = max(fnmatch.filter(names, "experiment_state-*.json"), default=None)
    if newest is None:
        return None
    path = f"{exp}/{newest}"
    with fs.open_input_stream(path) as f:
        return path, json.loads(f.read().decode())


@dataclass(frozen=True)
class SavedTrial:
    """One trial as the saved experiment state has it (what `status` shows)."""

    name: str                       # Tune's trial name: ours, from `trial_name_creator`
    trial_id: str
    status: str                     # PENDING, RUNNING, PAUSED, TERMINATED or ERROR
    config: dict[str, Any]
    last_result: dict[str, Any]


def saved_trials(exp: str) -> list[SavedTrial]:
    """The trials of a sweep as Tune's saved experiment state has them, read
    as plain JSON, without Ray; as `tune.ExperimentAnalysis` reads them: a
    trial running when the state was saved is PENDING. ValueError where Tune
    saved no state."""
    saved = saved_state(exp)
    if saved is None:
        raise ValueError(f"no experiment state (experiment_state-*.json) was found at {exp}")
    trials = []
    for entry in saved[1]["trial_data"]:
        trial, metadata = json.loads(entry[0]), json.loads(entry[1])
        name = trial.get("custom_trial_name") or f"{trial['trainable_name']}_{trial['trial_id']}"
        status = "PENDING" if trial["status"] == "RUNNING" else trial["status"]
        trials.append(SavedTrial(name, trial["trial_id"], status, trial.get("config") or {},
                                 metadata.get("last_result") or {}))
    return trials


def _saved_metadata(entry: list[str]):
    """A trial's run metadata (its checkpoint manager) from its experiment-state entry."""
    from ray.tune.trainable.metadata import _TrainingRunMetadata
    return _TrainingRunMetadata.from_json_state(entry[1])


def _saved_checkpoint_index(exp: str, fs, trial_id: str) -> int | None:
    """Index of the checkpoint the saved experiment state names for one trial."""
    try:
        saved = saved_state(exp, fs)
    except (OSError, ValueError):          # being written right now: keep everything
        return None
    for entry in (saved[1]["trial_data"] if saved else []):
        if json.loads(entry[0]).get("trial_id") == trial_id:
            latest = _saved_metadata(entry).checkpoint_manager.latest_checkpoint_result
            return _checkpoint_index(latest.checkpoint.path) if latest else None
    return None


def prune_trial(trial) -> None:
    """`PruneCheckpoints` at one of a live trial's checkpoints: deletes the
    trial's checkpoints older than both its latest one and the one the saved
    experiment state names, and forgets them in its checkpoint manager."""
    fs = trial.storage.storage_filesystem
    try:
        keep_from = min(_checkpoint_index(trial.checkpoint.path) if trial.checkpoint else -1,
                        _saved_checkpoint_index(trial.storage.experiment_fs_path, fs,
                                                trial.trial_id) or -1)
        removed = _delete_checkpoints_before(fs, trial.storage.trial_fs_path, keep_from)
    except Exception as exc:        # pruning must never stop a sweep: keep them, try next time
        print(f"could not prune the checkpoints of {trial}: {exc}", file=sys.stderr)
        return
    manager = trial.run_metadata.checkpoint_manager
    manager._checkpoint_results = [r for r in manager._checkpoint_results
                                   if r.checkpoint.path.rstrip("/") not in removed]


def prune_saved_checkpoints(exp: str) -> None:
    """After `fit` saved the final experiment state: each trial keeps only the
    checkpoint that state names."""
    fs, path = files.filesystem(exp)
    saved = saved_state(path, fs)
    for entry in (saved[1]["trial_data"] if saved else []):
        latest = _saved_metadata(entry).checkpoint_manager.latest_checkpoint_result
        if latest is not None:
            trial_dir = latest.checkpoint.path.rstrip("/").rsplit("/", 1)[0]
            _delete_checkpoints_before(fs, trial_dir, _checkpoint_index(latest.checkpoint.path))


def _delete_checkpoints_before(fs, trial_dir: str, keep_from: int | None) -> set[str]:
    """Delete checkpoint_N folders of one trial with N < keep_from; returns their paths."""
    from pyarrow.fs import FileSelector

    removed: set[str] = set()
    if not keep_from or keep_from <= 0:
        return removed
    for info in fs.get_file_info(FileSelector(trial_dir, allow_not_found=True)):
        index = _checkpoint_index(info.path)
        if index is not None and index < keep_from:
            fs.delete_dir(info.path)
            removed.add(info.path.rstrip("/"))
    return removed


def _rewrite_saved_state(exp: str, edit) -> list[str]:
    """Before a restore: `edit(fs, folder, entry)` each trial's entry of the
    saved state in place, returning a line when it changed it (else None);
    the state is written back once if any did. Returns those lines."""
    fs, path = files.filesystem(exp)
    saved = saved_state(path, fs)
    if saved is None:
        return []
    state_path, state = saved
    notes = [note for entry in state["trial_data"] if (note := edit(fs, path, entry))]
    if notes:
        with fs.open_output_stream(state_path) as f:
            f.write(json.dumps(state).encode())
    return notes


def settle_ended_trials(exp: str, ended: set[str]) -> list[str]:
    """Before a restore: Tune saves its experiment state every ten seconds or
    so, and a driver killed right after a trial ended leaves a state in which
    that trial still runs, from an older checkpoint; restored, Tune would train
    it again. A trial whose MLflow run has ended (a pack: every member's run;
    `ended`: their trial names) is marked TERMINATED there, with its newest
    checkpoint (a trial saves its final one before it ends its run) and the
    result reported with that checkpoint. Returns one line per trial."""
    def settle(fs, path: str, entry: list[str]) -> str | None:
        trial = json.loads(entry[0])
        name = trial.get("custom_trial_name") or trial["trial_id"]
        if (trial["status"] not in ("RUNNING", "PENDING", "PAUSED")
                or not set(member_names(trial["config"]) or [name]) <= ended):
            return None
        metadata = _saved_metadata(entry)
        newest = _newest_checkpoint(fs, f"{path}/{trial['relative_logdir']}")
        named = metadata.checkpoint_manager.latest_checkpoint_result
        if newest is not None and (named is None or _checkpoint_index(newest) > _checkpoint_index(
                named.checkpoint.path)):
            from ray import tune
            from ray.train._internal.session import _TrainingResult

            with fs.open_input_stream(f"{newest}/{REPORTED_FILE}") as f:
                reported = json.loads(f.read().decode())
            metadata.checkpoint_manager.register_checkpoint(
                _TrainingResult(tune.Checkpoint(newest, filesystem=fs), reported))
        latest = metadata.checkpoint_manager.latest_checkpoint_result
        if latest is not None:         # what `status` shows: the trial's last epoch, not an older one
            metadata.last_result = {**metadata.last_result, **latest.metrics, "done": True}
        trial["status"] = "TERMINATED"
        entry[0] = json.dumps(trial)
        metadata.invalidate_cache()
        entry[1] = metadata.get_json_state()
        return f"{name}: ended before the driver stopped; not run again"

    return _rewrite_saved_state(exp, settle)


def _newest_checkpoint(fs, trial_dir: str) -> str | None:
    """The path of a trial's highest-numbered checkpoint that holds its reported result."""
    from pyarrow.fs import FileSelector

    found = [(_checkpoint_index(i.path), i.path.rstrip("/"))
             for i in fs.get_file_info(FileSelector(trial_dir, allow_not_found=True))]
    found = [(n, p) for n, p in found if n is not None and _file_exists(fs, f"{p}/{REPORTED_FILE}")]
    return max(found)[1] if found else None


def _file_exists(fs, path: str) -> bool:
    from pyarrow.fs import FileType
    return fs.get_file_info(path).type == FileType.File


def repair_checkpoints(exp: str) -> list[str]:
    """Before a restore: a trial whose saved checkpoint is gone (deleted by an
    older dynsweep, or by hand) falls back to its newest checkpoint that still
    exists, or starts over. Returns one line per trial changed."""
    def repair(fs, path: str, entry: list[str]) -> str | None:
        metadata = _saved_metadata(entry)
        manager = metadata.checkpoint_manager
        latest = manager.latest_checkpoint_result if manager else None
        if latest is None or _dir_exists(fs, latest.checkpoint.path):
            return None
        kept = [r for r in manager._checkpoint_results if _dir_exists(fs, r.checkpoint.path)]
        manager._checkpoint_results = kept
        manager._latest_checkpoint_result = kept[-1] if kept else None
        metadata.invalidate_cache()
        entry[1] = metadata.get_json_state()
        name = json.loads(entry[0]).get("custom_dirname") or json.loads(entry[0])["trial_id"]
        lost = latest.checkpoint.path.rsplit("/", 1)[-1]
        return (f"{name}: {lost} is gone; continuing from {kept[-1].checkpoint.path.rsplit('/', 1)[-1]}"
                if kept else f"{name}: {lost} is gone and no older one is left; the trial starts over")

    return _rewrite_saved_state(exp, repair)


def _dir_exists(fs, path: str) -> bool:
    from pyarrow.fs import FileType
    return fs.get_file_info(path).type == FileType.Directory


def restart_point(trial) -> str:
    """Where a failed trial starts again: its latest checkpoint (and that epoch), or its start."""
    latest = trial.run_metadata.checkpoint_manager.latest_checkpoint_result
    if latest is None:
        return "its start (no checkpoint yet)"
    epoch = latest.metrics.get("epoch")
    name = latest.checkpoint.path.rstrip("/").rsplit("/", 1)[-1]
    return f"{name}" + (f" (epoch {epoch:.0f})" if isinstance(epoch, (int, float)) else "")
