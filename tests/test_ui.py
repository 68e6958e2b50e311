"""`dynsweep ui`: a real MLflow server over a sqlite store; stopping the
command (SIGTERM or Ctrl-C) stops the server with it, and so does killing it
(SIGKILL), so the port is free."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from test_sweeps import DYNSWEEP, _env, uri, wait_for

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def port_free(port: int) -> bool:
    """Nothing listens on the port. SO_REUSEADDR: a connection of the stopped
    server left in TIME_WAIT (60 s on Linux) does not count."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stopping_ui_stops_its_server(tmp_path, sig, code):
    port = free_port()
    proc = subprocess.Popen(DYNSWEEP + ["ui", "--port", str(port), "--tracking-uri", uri(tmp_path)],
                            cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: serving(port), 120, "the MLflow UI")
        proc.send_signal(sig)                  # to the command only, not its process group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err[-2000:]
    wait_for(lambda: port_free(port), 20, f"port {port} to be free")


def _stat(pid: str) -> list[str] | None:
    """/proc/<pid>/stat fields after the command name: state, ppid, pgrp, ..."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def group(pgid: int) -> list[int]:
    """Live (not zombie) processes of the process group `pgid`."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fields = _stat(pid)
        if fields and fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(pid))
    return out


def children(pid: int) -> list[int]:
    return [int(p) for p in filter(str.isdigit, os.listdir("/proc"))
            if (f := _stat(p)) and int(f[1]) == pid]


def test_killed_ui_takes_its_server_with_it(tmp_path):
    """SIGKILL gives `dynsweep ui` no chance to stop its server: the watchdog in
    the server's group ends the whole group (MLflow, uvicorn, job runners)."""
    port = free_port()
    proc = subprocess.Popen(DYNSWEEP + ["ui", "--port", str(port), "--tracking-uri", uri(tmp_path)],
                            cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    pgid = None
    try:
        wait_for(lambda: serving(port), 120, "the MLflow UI")
        (pgid,) = {os.getpgid(c) for c in children(proc.pid)}   # the server's own group
        assert pgid != os.getpgid(proc.pid) and len(group(pgid)) >= 3, group(pgid)
        proc.kill()
        proc.wait(timeout=10)
        wait_for(lambda: not group(pgid), 15, f"process group {pgid} to end")
        wait_for(lambda: port_free(port), 10, f"port {port} to be free")
    finally:
        if proc.poll() is None:
            proc.kill()
        if pgid is not None and group(pgid):
            os.killpg(pgid, signal.SIGKILL)
