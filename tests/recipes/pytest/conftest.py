"""A pytest fixture for mailstorm-sink: one sink for the whole session, on
ports the OS picks, read from its ready file. Copy this file next to your tests.

The binary is $MAILSTORM_SINK, else mailstorm-sink from this repo's target/
(debug, then release), else mailstorm-sink on PATH.
"""

import json
import os
import pathlib
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

READY_TIMEOUT_S = 10
REPO = pathlib.Path(__file__).resolve().parents[3]


def sink_binary():
    if os.environ.get("MAILSTORM_SINK"):
        return os.environ["MAILSTORM_SINK"]
    for profile in ("debug", "release"):
        built = REPO / "target" / profile / "mailstorm-sink"
        if built.exists():
            return str(built)
    return shutil.which("mailstorm-sink") or pytest.fail(
        "mailstorm-sink not found: set MAILSTORM_SINK or run cargo build -p mailstorm-sink"
    )


class Sink:
    """A running sink: its SMTP address and a few control API calls."""

    def __init__(self, info):
        self.info = info  # the ready file: smtp, tls, control, pid, version...
        host, port = info["smtp"][0].rsplit(":", 1)
        self.host, self.port = host.strip("[]"), int(port)
        self.control = "http://" + info["control"]

    def api(self, method, path, body=None, content_type=None):
        request = urllib.request.Request(self.control + path, data=body, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                data = response.read()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path}: {e.code} {e.read().decode()}") from None
        return json.loads(data) if data else None

    def load_plan(self, helo, plan_yaml):
        """Fault plan (and expected behaviour) for sessions that EHLO as `helo`."""
        self.api("PUT", "/plan?helo=" + urllib.parse.quote(helo), plan_yaml.encode(), "application/yaml")

    def verdict(self, helo):
        return self.api("GET", f"/clients/{urllib.parse.quote(helo)}/verdict")


@pytest.fixture(scope="session")
def sink(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mailstorm-sink")
    ready, log_path = workdir / "ready.json", workdir / "sink.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sink_binary(), "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0",
             "--ready-file", str(ready)],
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        # The sink writes the file (atomically) once every listener accepts.
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready.exists():
            if proc.poll() is not None:
                pytest.fail(f"mailstorm-sink exited ({proc.returncode}) before it was ready:\n"
                            + log_path.read_text())
            if time.monotonic() > deadline:
                pytest.fail(f"mailstorm-sink not ready after {READY_TIMEOUT_S} s:\n" + log_path.read_text())
            time.sleep(0.02)
        yield Sink(json.loads(ready.read_text()))
    finally:
        if proc.poll() is None:
            proc.terminate()  # the sink stops cleanly (exit 0) on SIGTERM
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    if code != 0:
        pytest.fail(f"mailstorm-sink died or failed to stop (exit {code}):\n" + log_path.read_text())
