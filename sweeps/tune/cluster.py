"""Ray itself: connecting to a cluster or starting a local Ray, token auth,
the resources a local Ray would have, the environment a cluster's workers get.

`init_ray` joins the cluster at an address (else $RAY_ADDRESS) or starts a
Ray of our own, with Ray token auth as the cluster has it; a cluster that
does not answer or refuses us is `Unavailable`, one line. Ray's token auth,
its GCS service, its accelerator detection and starting a local Ray without
its autoscaler monitor and log monitor (`_lean_head`) have no public API:
the private calls for them (`ray._private`, `ray._raylet`,
`ray.core.generated`) are made here, each where it is needed.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import os
from typing import Any

import ray

from sweeps import storage as files
from sweeps import tracking
from sweeps.errors import Unavailable
from sweeps.spec import SweepSpec


def init_ray(address: str | None, spec: SweepSpec) -> None:
    """Connect to the cluster at `address` (else $RAY_ADDRESS), or start a local
    Ray. Either way with Ray token auth as the cluster has it (`_token_auth`);
    a cluster that does not answer or refuses us is `Unavailable`, one line.
    A cluster's workers do not inherit our environment: they get the MLflow
    and object-storage client settings (credentials) through the job's runtime env."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")   # our Progress lines replace Tune's tables
    # short trials checkpoint every epoch by design: no warning about snapshot frequency
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's result files: only result.json (ExperimentAnalysis reads it), no CSV or TensorBoard copies
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        _token_auth(address)
        try:
            ray.init(address=address, log_to_driver=False, runtime_env=_worker_env())
        except Exception as exc:   # ConnectionError, AuthenticationError, RuntimeError, ...
            raise Unavailable(f"cannot join the Ray cluster at {address} ({type(exc).__name__}): "
                              f"{str(exc).splitlines()[0][:160]}") from None
        return
    _token_auth(None)
    # "local": a Ray of our own even where `ray start` left one running on this machine,
    # which ray.init would otherwise join (and refuse num_cpus for); --address auto joins it
    with _lean_head():
        ray.init(address="local", num_cpus=local_cpus(spec),
                 include_dashboard=False, log_to_driver=False, configure_logging=False)


@contextlib.contextmanager
def _lean_head():
    """A local Ray without two processes that a sweep on it never uses: the
    autoscaler's monitor (a local Ray has nothing to scale; it ignores
    SIGTERM, so Ray's shutdown waited 1 s for it before killing it) and the
    log monitor (it sends workers' output to drivers, which
    `log_to_driver=False` turns off). Each is a Python process that competed
    with the sweep's own start for the CPU. `ray.init` has no option for
    either (`ray start` has --no-monitor); the RayParams it builds has:
    while this is open, ray.init builds one that defaults both off. A Ray
    whose RayParams lacks them starts them as before."""
    from ray._private import parameter

    cls = parameter.RayParams
    if not {"no_monitor", "include_log_monitor"} <= set(inspect.signature(cls).parameters):
        yield
        return

    class LeanParams(cls):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("no_monitor", True)
            kwargs.setdefault("include_log_monitor", False)
            super().__init__(*args, **kwargs)

    parameter.RayParams = LeanParams
    try:
        yield
    finally:
        parameter.RayParams = cls


def local_cpus(spec: SweepSpec) -> int:
    """The CPUs a local Ray is started with: the machine's, or what one trial needs."""
    r = spec.resources
    need = max(r.cpus_per_trial, 1 + r.workers_per_trial if r.workers_per_trial > 1 else 0)
    return max(os.cpu_count() or 1, int(need + 0.999))


def local_gpus() -> int | None:
    """The GPUs a local Ray would find, counted as Ray counts them (the NVIDIA
    driver's, less what CUDA_VISIBLE_DEVICES hides) without starting it; None
    where this Ray's detection cannot be called."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        manager = get_accelerator_manager_for_resource("GPU")
        n = manager.get_current_node_num_accelerators()
        visible = manager.get_current_process_visible_accelerator_ids()
    except Exception:          # a private API: a Ray that moved it is checked once it runs
        return None
    return n if visible is None else min(n, len(visible))


def _worker_env() -> dict[str, Any] | None:
    """A runtime env with our MLflow and object-storage (AWS_*) client settings, less
    those that a submitted job's own runtime env already sets (Ray refuses the same key twice)."""
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")).get("runtime_env") or {}
    ours = {**tracking.client_env(), **files.client_env()}
    env = {k: v for k, v in ours.items() if k not in (job.get("env_vars") or {})}
    return {"env_vars": env} if env else None


def _token_auth(address: str | None) -> None:
    """Ray token auth the way the cluster has it. A local Ray always uses it
    (Ray's default; a token is made in ~/.ray/auth_token if there is none). A
    cluster is asked first, with a short timeout: if its GCS wants a token
    we send ours (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token),
    and say in one line what to set when we have none or it is refused.
    Switched on explicitly, so Ray prints no banner about it on every run."""
    try:
        from ray._private.authentication.authentication_token_setup import _enable_token_auth
        from ray._raylet import AuthenticationTokenLoader
    except ImportError:   # a Ray without token auth: nothing to follow
        return
    mode = os.environ.get("RAY_AUTH_MODE", "").lower()
    if address is None:
        if not mode:
            _enable_token_auth()
        return
    if address == "auto" or "://" in address or mode == "disabled":
        return   # Ray finds (and authenticates to) a local cluster itself; other schemes are Ray's
    if _gcs_answers(address, with_token=False):
        return
    fix = ("set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to the head's token "
           "(`ray get-auth-token` on the head prints it; or copy it to ~/.ray/auth_token)")
    if not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        raise Unavailable(f"the Ray cluster at {address} uses token authentication and we have "
                          f"no token: {fix}")
    _enable_token_auth()
    if not _gcs_answers(address, with_token=True):
        raise Unavailable(f"the Ray cluster at {address} refused our token: {fix}")


def _gcs_answers(address: str, with_token: bool, timeout_s: float = 10) -> bool:
    """Whether the GCS at host:port answers a cheap call (False: it wants a token
    we did not send, or refused the one we sent); `Unavailable` when nothing answers."""
    import grpc
    from ray._raylet import AuthenticationTokenLoader
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    metadata = (tuple(AuthenticationTokenLoader.instance().get_token_for_http_header().items())
                if with_token else ())
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s,
                              metadata=metadata)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                return False
            raise Unavailable(f"no Ray cluster answers at {address} ({exc.code().name}): check the "
                              f"address (the head's `ray start --head --port`, default 6379) "
                              f"and that the head runs") from None
    return True


def connected() -> bool:
    """Whether this process has joined or started a Ray already."""
    return ray.is_initialized()


def cluster_resources() -> dict[str, float]:
    """The resources of the Ray this process has joined (CPU, GPU, ...)."""
    return ray.cluster_resources()


def node_lost(actor_id) -> bool:
    """Whether the node the actor ran on is gone: dead to the GCS, or its raylet
    no longer answers (the GCS declares a node dead only after a few missed
    health checks, seconds after its worker connections dropped)."""
    import socket
    from ray._private import state

    try:
        node = state.actors(actor_id.hex() if isinstance(actor_id, bytes) else actor_id)["Address"]["NodeID"]
        (info,) = [n for n in ray.nodes() if n["NodeID"] == node]
    except Exception:               # an actor or node the GCS no longer knows: nothing to tell
        return False
    if not info["Alive"]:
        return True
    try:
        socket.create_connection((info["NodeManagerAddress"], info["NodeManagerPort"]), timeout=2).close()
    except OSError:
        return True
    return False
