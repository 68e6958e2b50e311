"""The Tuner's settings from a spec: the param space, the TuneConfig
(search, scheduler, trial names) and the RunConfig (storage, stopper,
failures, checkpoints kept, callbacks).
"""
from __future__ import annotations

import json
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from sweeps import storage as files
from sweeps.context import PACK_KEY, TRIAL_KEY, trial_label, trial_names
from sweeps.spec import SweepSpec
from sweeps.tune.checkpoints import prune_trial
from sweeps.tune.stopper import SpecStopper


def param_space(spec: SweepSpec, units: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Grid: one value per trial (or per pack: `units`) under one key; Optuna: a
    distribution per path."""
    if units is None:
        space: dict[str, Any] = {path: _distribution(d) for path, d in spec.search.space.items()}
        space["seed"] = spec.seeds[0]
        return space
    return {PACK_KEY if spec.resources.pack > 1 else TRIAL_KEY: tune.grid_search(units)}


def _distribution(d) -> Any:
    if d.kind == "loguniform":
        return tune.loguniform(d.low, d.high)
    if d.kind == "uniform":
        return tune.uniform(d.low, d.high)
    if d.kind == "int":
        return tune.randint(int(d.low), int(d.high) + 1)
    return tune.choice(d.values)


def tune_config(spec: SweepSpec) -> tune.TuneConfig:
    swept = spec.overrides() if spec.search.kind == "grid" else []
    grid_names = {_values_key(o): n for o, n in zip(swept, trial_names(swept))}

    def name(trial) -> str:
        """Grid: the swept values (deterministic: resume finds its folders by
        them). Optuna may sample a config twice: its names end in Tune's trial id."""
        if PACK_KEY in trial.config:
            return trial.config[PACK_KEY]["name"]
        if TRIAL_KEY in trial.config:
            return grid_names[_values_key(trial.config[TRIAL_KEY])]
        return f"{trial_label(trial.config)}-{trial.trial_id}"

    search_alg, num_samples = None, 1
    if spec.search.kind == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch
        search_alg = OptunaSearch(metric=spec.search.metric, mode=spec.search.mode,
                                  sampler=optuna.samplers.TPESampler(seed=spec.search.seed))
        num_samples = spec.search.num_samples
    s = spec.scheduler
    scheduler = (ASHAScheduler(time_attr="epoch", metric=s.metric, mode=s.mode,
                               max_t=spec.base.train.epochs, grace_period=s.grace_period,
                               reduction_factor=s.reduction_factor)
                 if s.kind == "asha" else FIFOScheduler())
    return tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
                           reuse_actors=True, trial_name_creator=name, trial_dirname_creator=name)


def _values_key(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, default=str)


def run_config(spec: SweepSpec, storage: str, callbacks: list) -> tune.RunConfig:
    """Tune keeps every checkpoint (`num_to_keep=None`): with a limit it deletes
    old ones at once, also the one its last saved experiment state still names,
    and a driver killed before the next save could never resume that trial.
    `PruneCheckpoints` deletes them instead, once nothing refers to them.
    Of Tune's result loggers only the JSON one (`init_ray` turns off the others)."""
    from ray.tune.logger import JsonLoggerCallback

    stop = SpecStopper(spec.stopper, files.join(storage, spec.name)) if spec.stopper else None
    return tune.RunConfig(
        name=spec.name, storage_path=storage, stop=stop,
        failure_config=tune.FailureConfig(max_failures=spec.fault_tolerance.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        callbacks=[*callbacks, JsonLoggerCallback(), PruneCheckpoints()], verbose=0)


class PruneCheckpoints(tune.Callback):
    """Deletes a trial's checkpoints older than both its latest one and the one
    the saved experiment state names, so a restore always finds its checkpoint
    and failed workers restart from the latest (`checkpoints.prune_trial`)."""

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        prune_trial(trial)
