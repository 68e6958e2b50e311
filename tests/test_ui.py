"""`dynsweep ui`: a real MLflow server over a sqlite store; stopping the
command (SIGTERM or Ctrl-C) stops the server with it, so the port is free."""
from __future__ import annotations

import signal
import socket
import subprocess
import urllib.request

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
