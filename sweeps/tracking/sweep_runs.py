"""The driver's side of a sweep: its parent run, closing trial runs that
their trials left open, and the one `conjectures` run that holds its verdicts.
"""
from __future__ import annotations

import time
from typing import Any

import pandas as pd

from sweeps.tracking.store import (GIT_COMMIT_TAG, KIND_TAG, NOTE_TAG, PARENT_TAG, RUN_NAME_TAG,
                                   Store, retry)

JUDGEMENT_VERSION_TAG = "dynsweep.judgement_version"


# The MLflow 3 UI opens an experiment of this kind on its training-runs table
# (not the GenAI overview).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def start_sweep(store: Store, name: str, spec_hash: str, git_sha: str | None,
                description: str = "", params: dict[str, Any] | None = None) -> str:
    """Create the parent run of one sweep execution (named `<name>@<start time>`);
    returns its run id."""
    exp_id = store.experiment_id(name)
    retry(lambda: store.client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND))
    run_name = f"{name}@{time.strftime('%Y%m%d-%H%M%S')}"
    tags = {KIND_TAG: "sweep", "spec_hash": spec_hash, RUN_NAME_TAG: run_name}
    if git_sha:
        tags["git_sha"] = git_sha
        tags[GIT_COMMIT_TAG] = git_sha
    if description:
        tags[NOTE_TAG] = description
    run = retry(lambda: store.client.create_run(exp_id, tags=tags, run_name=run_name))
    if params:
        store.log_params(run.info.run_id, params)
    return run.info.run_id


def find_sweep(store: Store, name: str) -> str | None:
    """Run id of the latest parent run of experiment `name`, or None."""
    exp_id = store.experiment_or_none(name)
    if exp_id is None:
        return None
    runs = store.client.search_runs(
        [exp_id], filter_string=f"tags.`{KIND_TAG}` = 'sweep'",
        max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id if runs else None


def runs_page(store: Store, name: str, parent_run_id: str, ui_url: str = "http://127.0.0.1:5000") -> str:
    """The UI's runs table of one sweep: its trials (children of the parent
    run), best validation accuracy first."""
    from urllib.parse import urlencode

    exp_id = store.experiment_id(name)
    query = urlencode({"searchFilter": f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                       "orderByKey": "metrics.`final/val_acc`", "orderByAsc": "false",
                       "compareRunsMode": "TABLE"})
    return f"{ui_url.rstrip('/')}/#/experiments/{exp_id}/runs?{query}"


def end_sweep(store: Store, run_id: str, status: str = "FINISHED") -> None:
    store.end_run(run_id, status)


def close_trial_run(store: Store, run_id: str, errored: bool, stopped_early: bool = False) -> None:
    """End a trial run its trial left open: FAILED and `status=errored` for a trial
    that died for good, else FINISHED (tagged `stopped_early` when the scheduler
    stopped it between reports)."""
    if errored:
        store.set_tags(run_id, {"status": "errored"})
        store.end_run(run_id, "FAILED")
        return
    tags = {"status": "finished"}
    if stopped_early:
        tags["stopped_early"] = "true"
    store.set_tags(run_id, tags)
    store.end_run(run_id)


def log_judgement(store: Store, experiment_name: str, parent_run_id: str,
                  verdicts: list[dict[str, Any]], figures: dict[str, Any],
                  tables: dict[str, pd.DataFrame] | None = None,
                  tags: dict[str, str] | None = None) -> tuple[str, int]:
    """The sweep's one `conjectures` child run, created on the first judgement
    and updated in place afterwards. Each judgement is kept as
    `judgements/v<N>.json`; `verdicts.json` / `verdicts.csv`, the figures,
    `tables` (CSV artifacts by name) and the tags describe the latest.
    Returns (run id, version N)."""
    exp_id = store.experiment_id(experiment_name)
    found = store.client.search_runs(
        [exp_id], filter_string=(f"tags.`{PARENT_TAG}` = '{parent_run_id}' "
                                 f"and tags.`{KIND_TAG}` = 'conjectures'"),
        max_results=1, order_by=["attributes.start_time ASC"])
    if found:
        rid = found[0].info.run_id
        version = int(found[0].data.tags.get(JUDGEMENT_VERSION_TAG, "0")) + 1
        retry(lambda: store.client.update_run(rid, status="RUNNING"))
    else:
        run_tags = {PARENT_TAG: parent_run_id, KIND_TAG: "conjectures", RUN_NAME_TAG: "conjectures"}
        run = retry(lambda: store.client.create_run(exp_id, tags=run_tags, run_name="conjectures"))
        rid, version = run.info.run_id, 1
    record = {"version": version, "verdicts": verdicts, "figures": sorted(figures),
              "tables": sorted(tables or {})}
    store.log_json(rid, record, f"judgements/v{version}.json")
    store.log_json(rid, verdicts, "verdicts.json")
    store.log_artifact_bytes(rid, pd.DataFrame(verdicts).to_csv(index=False).encode(), "verdicts.csv")
    for name, fig in figures.items():
        store.log_figure(rid, fig, f"figures/{name}")
    for name, frame in (tables or {}).items():
        store.log_artifact_bytes(rid, frame.to_csv(index=False).encode(), name)
    store.set_tags(rid, {**(tags or {}), JUDGEMENT_VERSION_TAG: str(version)})
    store.end_run(rid)
    return rid, version
