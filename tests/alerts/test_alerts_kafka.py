import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from diaflow.alerts import (
    KafkaSink,
    SinkUnavailableError,
    archived_alerts,
    build_alert_payloads,
)
from diaflow.alerts.synthetic import SyntheticVisit
from diaflow.errors import ConfigError
from diaflow.l1db.api import ArchivedAlert

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def packets(small_visit: SyntheticVisit) -> list[ArchivedAlert]:
    batch = build_alert_payloads(small_visit.dia_sources, **small_visit.inputs())
    return archived_alerts(
        batch, visit=7, detector=42, software_version="t", generation="L1-0", issued_mjd_tai=60800.3
    )


def _topic_messages(bootstrap: str, topic: str) -> list[tuple[bytes, bytes]]:
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "test-reader",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    out, done = [], set()
    while len(done) < len(partitions):
        for msg in consumer.consume(100, timeout=2.0):
            if msg.error() is not None:
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                done.add(msg.partition())
            else:
                out.append((msg.key(), msg.value()))
    consumer.close()
    return out


def test_packets_arrive_unchanged(
    kafka_broker: str, kafka_topic: str, tmp_path: Path, packets: list
) -> None:
    sink = KafkaSink(kafka_broker, kafka_topic, state_dir=tmp_path)
    sink.send(7, 42, packets)
    got = dict(_topic_messages(kafka_broker, kafka_topic))
    assert got == {str(p.diaSourceId).encode(): p.payload for p in packets}
    sink.send(7, 42, packets)  # a retry after success sends nothing
    assert len(_topic_messages(kafka_broker, kafka_topic)) == len(packets)
    sink.close()


_CRASHING_CHILD = """
import os, pickle, sys
import confluent_kafka
from diaflow.alerts import KafkaSink

packets = pickle.load(open(sys.argv[1], "rb"))
limit, flush_first = len(packets) // 2, sys.argv[5] == "flush"

class Dying(confluent_kafka.Producer):
    sent = 0
    def produce(self, *args, **kwargs):
        if Dying.sent == limit:
            if flush_first:
                self.flush(10)
            os._exit(3)  # killed in the middle of the visit
        Dying.sent += 1
        super().produce(*args, **kwargs)

confluent_kafka.Producer = Dying
KafkaSink(sys.argv[2], sys.argv[3], state_dir=sys.argv[4]).send(7, 42, packets)
"""


@pytest.mark.parametrize("mode", ["flush", "no-flush"])
def test_a_crash_mid_visit_then_a_retry_gives_each_alert_once(
    kafka_broker: str, kafka_topic: str, tmp_path: Path, packets: list, mode: str
) -> None:
    blob = tmp_path / "packets.pkl"
    blob.write_bytes(pickle.dumps(packets))
    state = tmp_path / "state"
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(_CRASHING_CHILD),
            str(blob),
            kafka_broker,
            kafka_topic,
            str(state),
            mode,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 3, child.stderr
    before = _topic_messages(kafka_broker, kafka_topic)
    if mode == "flush":
        assert len(before) == len(packets) // 2
    retry = KafkaSink(kafka_broker, kafka_topic, state_dir=state)
    retry.send(7, 42, packets)
    retry.close()
    after = _topic_messages(kafka_broker, kafka_topic)
    keys = [k for k, _ in after]
    assert sorted(keys) == sorted(str(p.diaSourceId).encode() for p in packets)
    assert dict(after) == {str(p.diaSourceId).encode(): p.payload for p in packets}


def test_unreachable_broker_is_a_clear_retryable_error(tmp_path: Path, packets: list) -> None:
    sink = KafkaSink("127.0.0.1:9", "alerts", state_dir=tmp_path, timeout_s=2.0)
    with pytest.raises(SinkUnavailableError, match="send this visit again later"):
        sink.send(7, 42, packets)
    assert not (tmp_path / "alerts" / "7_42.json").exists()


def test_missing_topic_is_a_config_error(kafka_broker: str, tmp_path: Path, packets: list) -> None:
    sink = KafkaSink(kafka_broker, "no-such-topic", state_dir=tmp_path, timeout_s=5.0)
    with pytest.raises(ConfigError, match="no-such-topic"):
        sink.send(7, 42, packets)
