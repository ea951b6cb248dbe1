from pathlib import Path

import fastavro
import pytest

from diaflow.alerts import (
    AvroFileSink,
    KafkaSink,
    MultiSink,
    SinkConfig,
    archived_alerts,
    build_alert_payloads,
    deserialize,
    make_sinks,
)
from diaflow.alerts.synthetic import SyntheticVisit
from diaflow.errors import ArchiveConflictError, BadInputError, ConfigError
from diaflow.l1db.api import ArchivedAlert


@pytest.fixture(scope="module")
def packets(small_visit: SyntheticVisit) -> list[ArchivedAlert]:
    batch = build_alert_payloads(small_visit.dia_sources, **small_visit.inputs())
    return archived_alerts(
        batch, visit=7, detector=42, software_version="t", generation="L1-0", issued_mjd_tai=60800.3
    )


def test_avro_file_is_read_back_unchanged_by_fastavro(tmp_path: Path, packets: list) -> None:
    sink = AvroFileSink(tmp_path / "alerts")
    sink.send(7, 42, packets)
    path = tmp_path / "alerts" / "7_42.avro"
    assert sink.path(7, 42) == path
    with open(path, "rb") as f:
        reader = fastavro.reader(f)
        records = list(reader)
        assert reader.metadata["diaflow.schema_id"] == "1101"
        assert reader.writer_schema["name"] == "lsst.v11_1.alert"
    assert records == [deserialize(p.payload) for p in packets]
    assert sorted(p.name for p in path.parent.iterdir()) == ["7_42.avro"]  # no temporary left


def test_avro_file_sink_is_idempotent_and_never_overwrites(tmp_path: Path, packets: list) -> None:
    sink = AvroFileSink(tmp_path)
    sink.send(7, 42, packets)
    path = sink.path(7, 42)
    before = (path.stat().st_mtime_ns, path.read_bytes())
    sink.send(7, 42, list(reversed(packets)))  # a retry: same ids
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before
    with pytest.raises(ArchiveConflictError, match="never overwritten"):
        sink.send(7, 42, packets[:-1])
    assert path.read_bytes() == before[1]


def test_a_retry_rewrites_the_same_bytes(tmp_path: Path, packets: list) -> None:
    AvroFileSink(tmp_path / "a").send(7, 42, packets)
    AvroFileSink(tmp_path / "b").send(7, 42, packets)
    assert (tmp_path / "a/7_42.avro").read_bytes() == (tmp_path / "b/7_42.avro").read_bytes()


def test_many_blocks_and_empty_visits(tmp_path: Path, packets: list) -> None:
    many = packets * 30  # 1290 records: two container blocks
    AvroFileSink(tmp_path).send(1, 2, many)
    with open(tmp_path / "1_2.avro", "rb") as f:
        assert sum(b.num_records for b in fastavro.block_reader(f)) == len(many)
    AvroFileSink(tmp_path).send(1, 3, [])
    assert not (tmp_path / "1_3.avro").exists()


def test_mixed_schema_ids_are_refused(tmp_path: Path, packets: list) -> None:
    odd = ArchivedAlert(**{**packets[0].__dict__, "diaSourceId": 1, "schema_id": 1100})
    with pytest.raises(BadInputError, match="schema ids"):
        AvroFileSink(tmp_path).send(7, 42, [*packets, odd])


def test_multi_sink_sends_to_all(tmp_path: Path, packets: list) -> None:
    sink = MultiSink([AvroFileSink(tmp_path / "a"), AvroFileSink(tmp_path / "b")])
    sink.send(7, 42, packets)
    assert (tmp_path / "a/7_42.avro").exists()
    assert (tmp_path / "b/7_42.avro").exists()


def test_make_sinks_from_config(tmp_path: Path) -> None:
    assert isinstance(make_sinks(SinkConfig(avro_dir=tmp_path)), AvroFileSink)
    both = make_sinks(
        SinkConfig(avro_dir=tmp_path, kafka_bootstrap="127.0.0.1:1", kafka_state_dir=tmp_path / "k")
    )
    assert isinstance(both, MultiSink)
    assert [type(s) for s in both.sinks] == [AvroFileSink, KafkaSink]
    with pytest.raises(ConfigError, match="no alert sink"):
        make_sinks(SinkConfig())
    with pytest.raises(ConfigError, match="kafka_state_dir"):
        SinkConfig(kafka_bootstrap="127.0.0.1:1")
