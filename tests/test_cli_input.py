"""Bad input of every kind exits 2 with a short message naming the file and
the field, before anything starts; every command takes only its own flags."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pytest

from sweeps import cli
from sweeps.spec import SpecError, check_resources, load_spec, parse_spec

OPTUNA = "name: x\nsearch: {kind: optuna, space: {%s}}\n"
BLUR = "name: x\nbase: {data: {deficit: {kind: blur, start_epoch: 0, end_epoch: 4}}}\n"
BOOL = "Input should be a number, not the boolean true"
STR = "Input should be a number, not the string"

# case -> (file content: text, bytes or None for "no file", the field the message names)
CORPUS: dict[str, tuple[str | bytes | None, str]] = {
    # the file itself
    "missing_file": (None, "no such spec file"),
    "directory": ("<dir>", "a directory"),
    "unreadable": ("name: x\n", "permission denied"),
    "latin1": ("name: caf\xe9\n".encode("latin-1"), "not UTF-8"),
    "utf16": ("name: x\n".encode("utf-16"), "not UTF-8"),
    "empty": ("", "empty file"),
    "only_comments": ("# name: x\n", "empty file"),
    "a_list": ("- name: x\n", "mapping"),
    "a_scalar": ("just words\n", "mapping"),
    # YAML
    "unclosed_flow": ("name: x\nbase: {data: [", "line 2"),
    "bad_indent": ("name: x\nbase:\n  optim:\n    lr: 0.1\n   momentum: 0.9\n", "line 5"),
    "tab_indent": ("name: x\nbase:\n\toptim: {}\n", "line 3"),
    "two_documents": ("name: x\n---\nname: y\n", "line 2"),
    "python_tag": ("name: !!python/object:os.system x\n", "line 1"),
    "duplicate_top_key": ("name: x\nseeds: [0]\nname: y\n", "name"),
    "duplicate_nested_key": ("name: x\nbase:\n  optim: {lr: 0.1, lr: 0.2}\n", "base.optim.lr"),
    "duplicate_grid_axis": ("name: x\ngrid:\n  optim.lr: [0.1]\n  optim.lr: [0.2]\n", "grid.optim.lr"),
    "duplicate_in_list": ("name: x\nvariants:\n  - {optim.lr: 0.1, optim.lr: 0.2}\n", "variants[0].optim.lr"),
    # non-finite numbers, anywhere a float goes
    "lr_inf": ("name: x\nbase: {optim: {lr: .inf}}", "base.optim.lr"),
    "lr_minus_inf": ("name: x\nbase: {optim: {lr: -.inf}}", "base.optim.lr"),
    "lr_inf_string": ("name: x\nbase: {optim: {lr: 'inf'}}", "base.optim.lr"),
    "momentum_nan": ("name: x\nbase: {optim: {momentum: .nan}}", "base.optim.momentum"),
    "divergence_inf": ("name: x\nbase: {train: {divergence_loss: .inf}}", "base.train.divergence_loss"),
    "milestone_nan": ("name: x\nbase: {optim: {schedule: {kind: step, milestones: [0.5, .nan]}}}",
                      "base.optim.schedule.milestones.1"),
    "grid_value_inf": ("name: x\ngrid: {optim.lr: [0.1, .inf]}", "grid.optim.lr[1]"),
    "grid_value_nan_string": ("name: x\ngrid: {optim.weight_decay: [0, nan]}", "grid.optim.weight_decay[1]"),
    "variant_value_inf": ("name: x\nvariants: [{optim.lr: .inf}]", "variants[0]"),
    "cpus_inf": ("name: x\nresources: {cpus_per_trial: .inf}", "resources.cpus_per_trial"),
    "reduction_nan": ("name: x\nscheduler: {kind: asha, reduction_factor: .nan}",
                      "scheduler.reduction_factor"),
    "search_high_inf": (OPTUNA % "optim.lr: {kind: loguniform, low: 0.001, high: .inf}",
                        "search.space.optim.lr.high"),
    "search_low_minus_inf": (OPTUNA % "optim.momentum: {kind: uniform, low: -.inf, high: 0.9}",
                             "search.space.optim.momentum.low"),
    "search_choice_nan": (OPTUNA % "optim.lr: {kind: choice, values: [0.1, .nan]}",
                          "search.space.optim.lr.values[1]"),
    # a number is a number: no YAML booleans (yes, true, on), no quoted numbers, no
    # fractions for whole numbers; one case per kind of numeric field
    "int_yes": ("name: x\nbase: {train: {epochs: yes}}", f"base.train.epochs: {BOOL}"),
    "int_fractional": ("name: x\nbase: {train: {epochs: 2.5}}",
                       "base.train.epochs: Input should be a valid integer"),
    "int_quoted": ("name: x\nbase: {train: {batch_size: '64'}}", f"base.train.batch_size: {STR}"),
    "float_true": ("name: x\nbase: {optim: {lr: true}}", f"base.optim.lr: {BOOL}"),
    "float_quoted": ("name: x\nbase: {optim: {lr: '0.1'}}", f"base.optim.lr: {STR}"),
    "optional_int_on": ("name: x\nbase: {train: {max_steps: on}}", f"base.train.max_steps: {BOOL}"),
    "optional_float_yes": ("name: x\nbase: {optim: {schedule: {kind: two_stage, lr2: yes}}}",
                           f"base.optim.schedule.lr2: {BOOL}"),
    "tuple_element_true": ("name: x\nbase: {optim: {betas: [0.9, true]}}", f"base.optim.betas.1: {BOOL}"),
    "seed_true": ("name: x\nseeds: [0, true]", f"seeds.1: {BOOL}"),
    "grid_value_yes": ("name: x\ngrid: {optim.lr: [0.1, yes]}", f"grid.optim.lr[1]: optim.lr: {BOOL}"),
    "grid_value_fractional": ("name: x\ngrid: {train.epochs: [2, 2.5]}", "grid.train.epochs[1]"),
    "variant_value_true": ("name: x\nvariants: [{train.epochs: true}]", f"variants[0]: train.epochs: {BOOL}"),
    "resources_yes": ("name: x\nresources: {gpus_per_trial: yes}", f"resources.gpus_per_trial: {BOOL}"),
    "resources_quoted": ("name: x\nresources: {pack: '2'}", f"resources.pack: {STR}"),
    "search_bound_true": (OPTUNA % "optim.lr: {kind: uniform, low: true, high: 0.5}",
                          f"search.space.optim.lr.low: {BOOL}"),
    "search_choice_on": (OPTUNA % "optim.lr: {kind: choice, values: [0.1, on]}",
                         f"search.space.optim.lr.values[1]: optim.lr: {BOOL}"),
    "stopper_patience_yes": ("name: x\nstopper: {kind: stiffness, patience: yes}", f"stopper.patience: {BOOL}"),
    "max_trials_true": ("name: x\nmax_trials: true", f"max_trials: {BOOL}"),
    # search spaces outside the field's limits
    "loguniform_above_limit": (OPTUNA % "optim.momentum: {kind: loguniform, low: 0.5, high: 2}",
                               "search.space.optim.momentum.high"),
    "uniform_below_limit": (OPTUNA % "optim.lr: {kind: uniform, low: -1, high: 1}",
                            "search.space.optim.lr.low"),
    "int_below_limit": (OPTUNA % "train.batch_size: {kind: int, low: 0, high: 64}",
                        "search.space.train.batch_size.low"),
    "int_fractional_bounds": (OPTUNA % "train.batch_size: {kind: int, low: 1.5, high: 64}",
                              "search.space.train.batch_size"),
    "choice_unknown_value": (OPTUNA % "model.name: {kind: choice, values: [mlp, vgg]}",
                             "search.space.model.name.values[1]"),
    "uniform_on_int_field": (OPTUNA % "train.batch_size: {kind: uniform, low: 16, high: 128}",
                             "search.space.train.batch_size"),
    "search_corners_coupled": (BLUR.replace("end_epoch: 4", "end_epoch: 20").replace("name: x\n", "")
                               + OPTUNA % ("data.deficit.start_epoch: {kind: int, low: 0, high: 5}, "
                                           "data.deficit.end_epoch: {kind: int, low: 3, high: 10}"),
                               "search.space: data.deficit.start_epoch=5, data.deficit.end_epoch=3"),
    # sizes
    "grid_10_million": ("name: x\ngrid:\n" + "".join(
        f"  {p}: [{', '.join(str(v) for v in range(1, 11))}]\n"
        for p in ("train.epochs", "train.batch_size", "model.width", "model.depth",
                  "data.data_seed", "probes.probe_seed", "probes.schedule.points")), "grid"),
    "grid_over_own_cap": ("name: x\nmax_trials: 3\ngrid: {optim.lr: [0.1, 0.2]}\nseeds: [0, 1]", "grid"),
    "optuna_over_cap": (OPTUNA.replace("search: {", "search: {num_samples: 20000, ")
                        % "optim.lr: {kind: loguniform, low: 0.001, high: 1}", "search.num_samples"),
    "max_trials_zero": ("name: x\nmax_trials: 0", "max_trials"),
    # cross-field checks hold for combinations, not single values
    "coupled_grid_values": (BLUR + "grid: {data.deficit.start_epoch: [0, 3], data.deficit.end_epoch: [2, 6]}",
                            "grid: data.deficit.start_epoch=3, data.deficit.end_epoch=2"),
    "coupled_variant_and_grid": ("name: x\nbase: {data: {deficit: {end_epoch: 10}}}\n"
                                 "variants: [{data.deficit.kind: none},\n"
                                 "           {data.deficit.kind: blur, data.deficit.start_epoch: 2}]\n"
                                 "grid: {data.deficit.end_epoch: [1, 5]}",
                                 "grid: data.deficit.end_epoch=1 in variants[1]"),
}


def _write(tmp_path: Path, case: str, monkeypatch) -> Path:
    content, _ = CORPUS[case]
    path = tmp_path / f"{case}.yaml"
    if content == "<dir>":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    if case == "unreadable":
        path.chmod(0)
        if os.access(path, os.R_OK):          # root reads anything: make the OS say no
            real = Path.read_text

            def read_text(self, *args, **kwargs):
                if self == path:
                    raise PermissionError(13, "Permission denied", str(self))
                return real(self, *args, **kwargs)
            monkeypatch.setattr(Path, "read_text", read_text)
    return path


def test_corpus_covers_every_kind():
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_bad_input_exits_2_with_a_short_message_naming_file_and_field(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, case, monkeypatch)
    started = time.perf_counter()
    assert cli.main(["validate", str(path)]) == 2
    assert time.perf_counter() - started < 5, "refusing a spec never builds its trials"
    captured = capsys.readouterr()
    message = captured.err
    assert 1 <= len(message.strip().splitlines()) <= 3, message
    assert str(path) in message and CORPUS[case][1] in message, message
    assert "Traceback" not in message and captured.out == ""


@pytest.mark.parametrize("case", ["lr_inf", "uniform_below_limit", "grid_10_million", "duplicate_nested_key",
                                  "latin1", "directory", "coupled_grid_values", "missing_file", "int_yes"])
def test_run_of_bad_input_starts_nothing(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, case, monkeypatch)
    before = set(tmp_path.iterdir())
    code = cli.main(["run", str(path), "--storage", str(tmp_path / "ray"),
                     "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert code == 2 and CORPUS[case][1] in capsys.readouterr().err
    assert set(tmp_path.iterdir()) == before, "no runs/, Ray storage or MLflow store"


def test_yaml_anchors_and_merge_keys_are_not_duplicates(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text("name: x\nbase:\n  optim: &o {lr: 0.1, momentum: 0.9}\n"
                    "variants:\n  - {<<: {optim.lr: 0.1}, optim.momentum: 0.5}\n  - {optim.lr: 0.2}\n")
    spec = load_spec(path)
    assert spec.base.optim.momentum == 0.9 and spec.n_trials() == 2


def test_cap_counts_without_building_and_a_full_cap_validates_fast(tmp_path, capsys):
    grid = {"optim.lr": [0.01 * (i + 1) for i in range(10)], "train.batch_size": list(range(1, 11)),
            "model.width": list(range(1, 11)), "data.data_seed": list(range(10))}
    spec = parse_spec({"name": "x", "grid": grid, "seeds": [0]})
    assert spec.n_trials() == 10_000 == spec.max_trials
    with pytest.raises(SpecError, match=r"grid: 20,000 trials .* exceed max_trials: 10,000"):
        parse_spec({"name": "x", "grid": grid, "seeds": [0, 1]})
    assert parse_spec({"name": "x", "grid": grid, "seeds": [0, 1], "max_trials": 20_000}).n_trials() == 20_000
    path = tmp_path / "cap.yaml"
    path.write_text(spec.model_dump_json(exclude_defaults=True))   # JSON is YAML
    started = time.perf_counter()
    assert cli.main(["validate", str(path)]) == 0
    assert time.perf_counter() - started < 3, "validate counts trials, it does not build them"
    assert "10000 trial(s)" in capsys.readouterr().out


def test_max_trials_does_not_change_the_spec_hash():
    assert parse_spec({"name": "x", "max_trials": 7}).spec_hash() == parse_spec({"name": "x"}).spec_hash()


def test_coupled_fields_are_checked_jointly_only_where_a_model_validator_exists():
    ok = parse_spec({"name": "x", "base": {"data": {"deficit": {"kind": "blur", "end_epoch": 10}}},
                     "grid": {"data.deficit.start_epoch": [0, 3], "data.deficit.end_epoch": [4, 6]}})
    assert ok.n_trials() == 4 and len(ok.trials()) == 4


# ---------------------------------------------------------------- resources
def spec_with(**resources):
    return parse_spec({"name": "x", "resources": resources})


@pytest.mark.parametrize("resources, available, field", [
    ({"gpus_per_trial": 1}, {"CPU": 16.0}, "resources.gpus_per_trial"),
    ({"gpus_per_trial": 1}, {"CPU": 16.0, "GPU": 0.0}, "resources.gpus_per_trial"),
    ({"gpus_per_trial": 2}, {"CPU": 16.0, "GPU": 1.0}, "resources.gpus_per_trial"),
    ({"cpus_per_trial": 8}, {"CPU": 4.0}, "resources.cpus_per_trial"),
    ({"workers_per_trial": 4}, {"CPU": 4.0}, "resources.workers_per_trial"),      # 1 + 4 × 1 CPUs
    ({"workers_per_trial": 2, "gpus_per_trial": 1}, {"CPU": 8.0, "GPU": 1.0}, "resources.workers_per_trial"),
])
def test_check_resources_names_the_request_the_cluster_cannot_meet(resources, available, field):
    problem = check_resources(spec_with(**resources), available)
    assert problem and problem.startswith(field + ":"), problem


@pytest.mark.parametrize("resources, available", [
    ({}, {"CPU": 1.0}),
    ({"gpus_per_trial": 0.5}, {"CPU": 2.0, "GPU": 1.0}),
    ({"workers_per_trial": 2, "cpus_per_trial": 2}, {"CPU": 5.0}),
    ({"workers_per_trial": 2, "gpus_per_trial": 1}, {"CPU": 3.0, "GPU": 2.0, "memory": 1e9}),
])
def test_check_resources_accepts_what_fits(resources, available):
    assert check_resources(spec_with(**resources), available) is None


@pytest.mark.parametrize("resources, says", [
    ("{gpus_per_trial: 1}", "resources.gpus_per_trial: 1 GPU per trial, but this machine has none"),
    ("{gpus_per_trial: 0.5, workers_per_trial: 2}", "resources.workers_per_trial: 2 workers × 0.5 GPU"),
])
@pytest.mark.parametrize("where", ["given", "default"])
def test_gpus_this_machine_lacks_are_refused_before_anything_exists(tmp_path, capsys, monkeypatch,
                                                                     resources, says, where):
    """A local run counts the GPUs as a local Ray would, without starting it:
    no runs/, storage folder, lock, MLflow store or Ray is made for a sweep
    that cannot run. CUDA_VISIBLE_DEVICES="" hides any GPU this machine has."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    for var in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "gpu.yaml"
    path.write_text(f"name: gpu\nresources: {resources}\n")
    before = set(tmp_path.iterdir())
    flags = ["--storage", str(tmp_path / "ray"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    assert cli.main(["run", str(path), *(flags if where == "given" else [])]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {path}: {says}"), line
    assert set(tmp_path.iterdir()) == before, "no runs/, Ray storage or MLflow store"
    import ray

    assert not ray.is_initialized()


# ---------------------------------------------------------------- the parser
def _commands() -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_flag_of_every_command_has_help():
    parsers = [cli._parser(), *_commands().values()]
    for parser in parsers:
        for action in parser._actions:
            assert action.help, f"{parser.prog}: {action.dest} has no help"
            for choice in getattr(action, "_choices_actions", []):
                assert choice.help, f"{parser.prog} {choice.dest} has no help"


# the flags each command uses; every other command must refuse them
USES = {"validate": set(), "run": {"--storage", "--tracking-uri", "--address", "--smoke", "--device", "--new"},
        "resume": {"--storage", "--tracking-uri", "--address", "--restart-errored"},
        "status": {"--storage", "--tracking-uri"}, "list": {"--storage"},
        "ui": {"--tracking-uri", "--host", "--port", "--workers"}, "conjectures": {"--tracking-uri", "--json", "--only", "--window", "--detector"}}
POSITIONAL = {"validate": ["s.yaml"], "run": ["s.yaml"], "resume": ["n"], "status": ["n"], "list": [],
              "ui": [], "conjectures": ["n"]}


def test_each_command_takes_exactly_the_flags_it_uses():
    commands = _commands()
    assert set(commands) == set(USES)
    for name, parser in commands.items():
        flags = {o for a in parser._actions for o in a.option_strings if o not in ("-h", "--help")}
        assert flags == USES[name], name


@pytest.mark.parametrize("command", sorted(USES))
def test_each_command_rejects_flags_it_does_not_use_in_one_line(command, capsys):
    for flag in sorted(set().union(*USES.values()) - USES[command]):
        assert cli.main([command, *POSITIONAL[command], flag, "v"]) == 2, (command, flag)
        message = capsys.readouterr().err
        assert len(message.strip().splitlines()) == 1 and flag in message, message


@pytest.mark.parametrize("argv, says", [
    (["run", "s.yaml", "--device", "gpu"], "--device"),
    (["ui", "--port", "http"], "--port"),
    (["ui", "--port", "70000"], "--port"),
    (["ui", "--workers", "0"], "--workers"),
    (["frobnicate"], "frobnicate"),
    ([], "COMMAND"),
    (["validate"], "spec"),
])
def test_bad_options_exit_2_in_one_line(argv, says, capsys):
    assert cli.main(argv) == 2
    message = capsys.readouterr().err
    assert len(message.strip().splitlines()) == 1 and says in message, message


def test_storage_that_is_a_file_is_bad_input(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert cli.main(["list", "--storage", str(tmp_path / "f")]) == 2
    assert "--storage" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert cli.main(["run", "--help"]) == 0
    assert "--device {auto,cpu,cuda}" in capsys.readouterr().out


ENTRY = """
import atexit, concurrent.futures, sys, threading, time
from sweeps import cli
pool = concurrent.futures.ThreadPoolExecutor(1)      # idle worker left open, as MLflow's are
pool.submit(time.sleep, 0).result()
worker = threading.Thread(target=time.sleep, args=(1,))  # a thread still at work
worker.start()
atexit.register(lambda: print("atexit ran", flush=True))
cli.main = lambda argv=None: 3
cli.entry()
"""


def test_the_command_exits_with_mains_code_after_threads_and_exit_handlers(tmp_path):
    """`dynsweep` (`cli.entry`) skips the interpreter's teardown but not what a
    normal exit does: an idle thread pool is told to stop (joining it blindly
    hung `dynsweep conjectures`), a working thread is waited for, atexit runs."""
    import subprocess
    import sys

    start = time.monotonic()
    res = subprocess.run([sys.executable, "-c", ENTRY], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert res.returncode == 3, res.stderr[-2000:]
    assert res.stdout.strip() == "atexit ran"
    assert time.monotonic() - start >= 1.0, "the working thread was waited for"
