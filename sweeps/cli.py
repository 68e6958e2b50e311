"""`dynsweep`: parse, call, print. Exit codes: 0 ok, 2 bad input, 1 runtime failure.

Defaults: local Ray, MLflow at sqlite:///runs/mlflow.db, Ray storage under
runs/ray, data cache under runs/data. MLFLOW_TRACKING_URI and RAY_ADDRESS
override, as users of both expect; so do --tracking-uri, --storage, --address.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sweeps.errors import Unavailable
from sweeps.interrupts import Interrupted
from sweeps.spec import SpecError, load_spec, smoke

RUNS = Path("runs")
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)   # one message, one line


class InputError(Exception):
    """Bad input that is not a spec: a path, a sweep name, an option."""


def _stop(signum, frame):
    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> int:
    """Ctrl-C (SIGINT) exits 130 and SIGTERM 143; a stopped sweep says how to resume."""
    try:
        args, extra = _parser().parse_known_args(argv)
        if extra:
            args.command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:          # usage errors (one line, code 2) and --help (0)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return args.func(args)
    except (SpecError, InputError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        return 2
    except Unavailable as exc:          # cluster, tracking store or storage: one line, no run left open
        name = getattr(args, "sweep", None) if getattr(exc, "resumable", False) else None
        hint = f"; then `{_resume_command(args, name)}` continues it" if name else ""
        err.print(f"[red]error:[/red] {escape(str(exc) + hint)}", soft_wrap=True)
        return 1
    except KeyboardInterrupt as exc:
        name = getattr(args, "sweep", None)
        hint = f": `{_resume_command(args, name)}` continues from the last checkpoints" if name else ""
        err.print(f"interrupted{hint}")
        return 128 + getattr(exc, "signum", signal.SIGINT)


# ---------------------------------------------------------------- commands
def cmd_validate(args) -> int:
    spec = load_spec(args.spec)
    for warning in _data_problems(spec):
        err.print(f"[yellow]warning:[/yellow] {args.spec}: {warning}")
    out.print(f"{args.spec}: valid — {_trials(spec)}, search={spec.search.kind}, "
              f"scheduler={spec.scheduler.kind}")
    return 0


def cmd_run(args) -> int:
    spec = load_spec(args.spec)
    if args.smoke:                 # its own experiment and folder, never mixed with the real sweep
        spec = smoke(spec).model_copy(update={"name": f"{spec.name}-smoke"})
    problems = _data_problems(spec, _cache(args))
    if problems:
        raise InputError(f"{args.spec}: {problems[0]}")
    from sweeps import driver
    from sweeps.tracking import default_tracking_uri

    args.sweep = spec.name
    try:                       # NoFit comes before runs/ exists: the store's folder waits for it
        outcome = driver.run_sweep(spec, storage=_storage(args), cache_dir=_cache(args),
                                   tracking_uri=args.tracking_uri or default_tracking_uri(RUNS, create=False),
                                   address=args.address, device=args.device, new=args.new,
                                   progress=True, note=err.print)
    except driver.SweepExists as exc:
        again = _command(args, "run", args.spec, *(["--smoke"] if args.smoke else []), "--new")
        raise InputError(f"{exc}: `{_resume_command(args, spec.name)}` continues it, "
                         f"`{again}` starts a new one") from None
    except driver.SweepBusy as exc:
        raise InputError(f"sweep {spec.name} is running already: {exc}") from None
    except driver.NoFit as exc:
        raise SpecError(f"{args.spec}: {exc.problem}") from None
    _print_rows(outcome.rows)
    if spec.conjectures:
        _conjectures(spec.name, outcome.tracking_uri, outcome.parent_run_id, spec.conjectures, as_json=False)
    _print_ui_hint(outcome.tracking_uri, spec.name, outcome.parent_run_id)
    return 1 if outcome.errors else 0


def cmd_resume(args) -> int:
    from sweeps import driver

    args.sweep = args.name
    try:
        outcome = driver.resume_sweep(args.name, storage=_storage(args), tracking_uri=args.tracking_uri,
                                      restart_errored=args.restart_errored, address=args.address,
                                      note=err.print)
    except FileNotFoundError as exc:
        raise InputError(str(exc)) from None
    except driver.SweepBusy as exc:
        raise InputError(f"sweep {args.name} is running already: {exc}") from None
    _print_rows(outcome.rows)
    _print_ui_hint(outcome.tracking_uri, outcome.name, outcome.parent_run_id)
    return 1 if outcome.errors else 0


def cmd_status(args) -> int:
    from sweeps import storage
    from sweeps.status import status_rows

    try:
        exp = storage.experiment_path(args.name, _storage(args))
    except FileNotFoundError as exc:
        raise InputError(str(exc)) from None
    _, ctx = storage.read_manifest(exp, args.tracking_uri)
    _print_rows(status_rows(exp, ctx))
    return 0


def cmd_list(args) -> int:
    from sweeps import storage

    rows = storage.list_sweeps(_storage(args))
    if not rows:
        out.print(f"no sweeps under {storage.storage_location(_storage(args))}")
    _print_rows(rows)
    return 0


def cmd_ui(args) -> int:
    from sweeps.tracking import default_tracking_uri, ui_command

    uri = args.tracking_uri or default_tracking_uri(RUNS)
    argv = ui_command(uri, host=args.host, port=args.port, workers=args.workers)
    err.print(f"MLflow UI on http://{args.host}:{args.port} over {uri} (Ctrl-C stops it)")
    signal.signal(signal.SIGTERM, _stop)
    # Ctrl-C also when started in the background, where SIGINT comes ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # the server in a process group of its own, so that a Ctrl-C reaches us only
    # and we stop it; in our session, so that the watchdog can join that group
    server = subprocess.Popen(argv, process_group=0)
    watchdog = _watch(server)
    try:
        return server.wait()
    finally:                       # Ctrl-C, SIGTERM or any error: the server goes with us
        _end_group(server, watchdog)


# Runs in the server's process group and ends that group when `dynsweep ui`
# is gone without a word (SIGKILL, OOM): the server's parent-death signal
# would reach only MLflow's own process, not uvicorn's workers or its job
# runners. Our end shows as a new parent (orphans are adopted), never as a
# pid that may be reused. SIGTERM first, as a stop does; SIGKILL what is
# left after 5 s, itself last.
WATCHDOG = """
import os, signal, sys, time
parent = int(sys.argv[1])
while os.getppid() == parent:
    time.sleep(0.2)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
os.killpg(0, signal.SIGTERM)
leader, deadline = os.getpgrp(), time.monotonic() + 5
while time.monotonic() < deadline:
    try:
        os.kill(leader, 0)
    except ProcessLookupError:
        break
    time.sleep(0.1)
os.killpg(0, signal.SIGKILL)
"""


def _watch(server: subprocess.Popen) -> subprocess.Popen | None:
    """The watchdog, started in the server's group (`_end_group` ends it with the
    server); None when the server ended before it could join the group."""
    try:
        return subprocess.Popen([sys.executable, "-c", WATCHDOG, str(os.getpid())],
                                process_group=server.pid, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None


def _end_group(server: subprocess.Popen, watchdog: subprocess.Popen | None = None) -> None:
    """SIGTERM to the server's process group (MLflow's uvicorn and job runners,
    the watchdog), SIGKILL to what is left after 10 s; returns once the group
    is gone (or 5 s after the SIGKILL), so that the port is free when the
    command ends."""
    ours = [p for p in (server, watchdog) if p is not None]
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            for p in ours:                      # reap our children, or the group never empties
                p.poll()
            try:
                os.killpg(server.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
    for p in ours:
        p.poll()


def cmd_conjectures(args) -> int:
    from sweeps import experiments
    from sweeps.conjectures.plan import parse_window
    from sweeps.tracking import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri(RUNS)
    names = args.only.split(",") if args.only else None
    unknown = [n for n in names or [] if n not in experiments.conjecture_names()]
    if unknown:
        raise InputError(f"unknown conjecture {unknown[0]!r}; valid names: "
                         f"{', '.join(experiments.conjecture_names())}")
    if args.window:
        try:
            parse_window(args.window)
        except ValueError as exc:
            raise InputError(f"--window: {exc}") from None
    overrides = {k: v for k, v in (("window", args.window), ("detector", args.detector)) if v}
    return _conjectures(args.name, uri, None, names, as_json=args.json, overrides=overrides)


# ----------------------------------------------------------------- helpers
def _conjectures(name: str, uri: str, parent_run_id: str | None, names, as_json: bool,
                 overrides: dict | None = None) -> int:
    from sweeps.conjectures.verdict import PLAN_CHANGED, SEEDS_SEEN
    from sweeps.judge import judge, verdict_label

    try:
        result = judge(name, uri, parent_run_id=parent_run_id, names=names, overrides=overrides)
    except KeyError as exc:                # an unknown name listed by the spec
        raise InputError(exc.args[0]) from None
    except LookupError as exc:
        raise InputError(str(exc)) from None
    verdicts = result.verdicts
    if as_json:
        print(json.dumps({"sweep": name, **result.to_dict()}, indent=2))
    else:
        for fname, frame in result.tables.items():
            _print_rows(_table_rows(frame), title=f"{fname} (- = none)")
        _print_rows([{"conjecture": v.name, "verdict": verdict_label(v), "statistic": v.statistic,
                      "effect": v.effect, "CI": _ci(v), "p raw": v.p_raw, "p adj": v.p_adjusted,
                      "n": v.n, "reason": v.reason, "plan": v.registered_hash or None,
                      "registered": v.registered_at or None, "history": v.history}
                     for v in verdicts], title="conjectures")
        registered = (f"{result.registered_plans_hash} at {result.registered_at}"
                      if result.registered_plans_hash else "none registered")
        why = {r for v in verdicts if v.exploratory for r in v.exploratory_reason.split("; ")}
        out.print(f"plans {result.plans_hash} (registered: {registered})"
                  + ("; exploratory verdicts were judged under plans that differ from the "
                     "registered ones" if PLAN_CHANGED in why else "")
                  + ("; 'seeds seen': an earlier sweep of the same conjecture trained on "
                     "these seeds (only fresh seeds confirm)" if SEEDS_SEEN in why else ""))
    return 0


def _ci(v) -> str:
    """'95% CI [lo, hi]' at the verdict's own level; '-' where there is none."""
    if v.ci_level != v.ci_level or v.ci_low != v.ci_low or v.ci_high != v.ci_high:
        return "-"
    return f"{v.ci_level:.0%} CI [{_fmt(v.ci_low)}, {_fmt(v.ci_high)}]"


def _table_rows(df) -> list[dict]:
    """An experiment's per-trial table, sorted by its config columns then seed, NaN shown as '-'."""
    df = df.drop(columns=["run_id"], errors="ignore")
    df = df.sort_values([c for c in df.columns if "." in c] + [c for c in ("seed",) if c in df.columns])
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
            for row in df.to_dict("records")]


def _data_problems(spec, cache: Path = RUNS / "data") -> list[str]:
    from dynamics_core.sources import check_available

    problems = []
    for cfg in spec.data_configs():
        problem = check_available(cfg, cache)
        if problem and problem not in problems:
            problems.append(problem)
    return problems


def _trials(spec) -> str:
    from sweeps.context import describe, tune_units

    return describe(spec, tune_units(spec) if spec.resources.pack > 1 else None)


def _resume_command(args, name: str) -> str:
    return _command(args, "resume", name)


def _command(args, verb: str, target: str, *extra: str) -> str:
    """`dynsweep VERB TARGET` with the storage, tracking URI and address as given."""
    argv = ["dynsweep", verb, target]
    for flag in ("storage", "tracking_uri", "address"):
        if getattr(args, flag, None):
            argv += [f"--{flag.replace('_', '-')}", getattr(args, flag)]
    return shlex.join([*argv, *extra])


def _cache(args) -> Path:
    """Generated data sets: $DYNSWEEP_CACHE, else `data/` beside the storage root
    (runs/data by default), never the current directory."""
    if os.environ.get("DYNSWEEP_CACHE"):
        return Path(os.environ["DYNSWEEP_CACHE"]).expanduser().resolve()
    if args.storage and "://" in args.storage:
        return RUNS.resolve() / "data"
    return Path(_storage(args)).expanduser().resolve().parent / "data"


def _storage(args) -> str:
    """--storage as given (an s3:// or gs:// URI stays a URI), else runs/ray."""
    if not args.storage:
        return str(RUNS / "ray")
    if "://" not in args.storage and Path(args.storage).exists() and not Path(args.storage).is_dir():
        raise InputError(f"--storage {args.storage}: not a directory")
    return args.storage


def _print_rows(rows: list[dict], title: str | None = None) -> None:
    if not rows:
        return
    table = Table(title=title)
    for col in rows[0]:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(_fmt(v) for v in row.values()))
    out.print(table)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))          # names like c1_lr[hessian/top] are not markup


def _print_ui_hint(uri: str, name: str, parent_run_id: str) -> None:
    """Where the results are: the store, the command serving its UI, and the
    link to this sweep's runs table."""
    from sweeps.tracking import Store, runs_page

    link = runs_page(Store(uri), name, parent_run_id)
    out.print(f"\nMLflow: experiment [bold]{escape(name)}[/bold] in {uri}\n"
              f"  serve the UI:  {shlex.join(['dynsweep', 'ui', '--tracking-uri', uri])}\n"
              f"  this sweep:    {link}", soft_wrap=True)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, exit 2, like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number ≥ 1")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    """Each command takes exactly the flags it uses; every flag says what it does."""
    p = _Parser(prog="dynsweep", description="Sweeps that measure how networks train.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do")

    def command(name: str, func, help: str, spec: bool = False, sweep: bool = False,
                storage: bool = False, tracking: bool = False):
        c = sub.add_parser(name, help=help, description=help)
        if spec:
            c.add_argument("spec", help="sweep spec YAML")
        if sweep:
            c.add_argument("name", help="sweep name (spec name) or its folder")
        if storage:
            c.add_argument("--storage", help="Ray storage root (default runs/ray; "
                                             "shared FS or s3:// on a cluster)")
        if tracking:
            c.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI "
                                                  "or sqlite:///runs/mlflow.db)")
        c.set_defaults(func=func, command_parser=c)
        return c

    address = "Ray cluster address, the head's GCS host:port, e.g. head:6379 (default $RAY_ADDRESS or a local Ray)"
    command("validate", cmd_validate, "check a spec, start nothing", spec=True)
    c = command("run", cmd_run, "run a sweep", spec=True, storage=True, tracking=True)
    c.add_argument("--address", help=address)
    c.add_argument("--smoke", action="store_true", help="shrink the sweep to seconds")
    c.add_argument("--new", action="store_true",
                   help="start over when the storage holds this sweep (the old one is kept as NAME@<time>)")
    c.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where trials train (default auto: the spec's train.device, CUDA when there is one)")
    c = command("resume", cmd_resume, "continue a stopped sweep from its checkpoints", sweep=True,
                storage=True, tracking=True)
    c.add_argument("--restart-errored", action="store_true", help="restart errored trials from scratch")
    c.add_argument("--address", help=address)
    command("status", cmd_status, "table of a sweep's trials", sweep=True, storage=True, tracking=True)
    command("list", cmd_list, "sweeps under the storage root", storage=True)
    c = command("ui", cmd_ui, "MLflow UI on 127.0.0.1 over the same store", tracking=True)
    c.add_argument("--host", default="127.0.0.1", help="interface to serve on (default 127.0.0.1)")
    c.add_argument("--port", type=_port, default=5000, help="port to serve on (default 5000)")
    c.add_argument("--workers", type=_positive, default=1,
                   help="server worker processes (default 1: one user's UI; MLflow's own default is 4)")
    c = command("conjectures", cmd_conjectures, "judge a sweep's conjectures", sweep=True, tracking=True)
    c.add_argument("--json", action="store_true", help="print the judgement as JSON: the sweep, what it ran on "
                   "(commit, torch, threads), its plans and every verdict")
    c.add_argument("--only", help="comma-separated conjecture names (default: the spec's)")
    c.add_argument("--window", help="exploratory: judge the plans of the conjectures judged "
                                    "(pick them with --only) over this window: whole_run, "
                                    "after_breakeven, until_<metric><op><value>, "
                                    "from_<metric><op><value>")
    c.add_argument("--detector", choices=["saturation", "stability"],
                   help="exploratory: break-even detector for plans that use one")
    return p


def entry() -> None:
    """The `dynsweep` command: `main`, then a quick exit. What a normal exit
    does that matters runs as the interpreter runs it — `threading._shutdown`
    (thread pools told to stop, other threads joined), then the atexit
    handlers (Ray's shutdown, temporary folders, log handlers) — and the
    interpreter's teardown of the modules loaded (torch, Ray, MLflow: 1-2 s
    after a sweep) is skipped. Ray is shut down before the atexit handlers:
    from its own atexit handler it first sleeps 0.5 s so that workers' output
    reaches the driver, which ours never does (`log_to_driver=False`)."""
    code = main()
    threading._shutdown()
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        try:
            ray.shutdown()
        except Exception:          # left to Ray's atexit handler, as before: the exit code stays main's
            pass
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
