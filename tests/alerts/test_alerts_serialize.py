import io
import json
from pathlib import Path

import fastavro
import pytest

from diaflow.alerts import (
    build_alert_payloads,
    build_alerts,
    deserialize,
    load_schema,
    serialize,
    split_wire,
    validate,
    wire_header,
)
from diaflow.alerts.synthetic import SyntheticVisit
from diaflow.errors import BadInputError

REFERENCE = Path("/work/shared/reference/alert_packet/schema/11/0/sample_data")
PACKAGE = Path(fastavro.__file__).parents[1] / "lsst/alert/packet/schema/11/1/sample_data"


def _samples() -> list[tuple[str, Path]]:
    out = [("11.1", PACKAGE / "fakeAlert.avro")]
    if (REFERENCE / "fakeAlert.avro").exists():
        out.append(("11.0", REFERENCE / "fakeAlert.avro"))
    return out


def test_wire_header_is_magic_byte_and_big_endian_id() -> None:
    assert wire_header(1101) == b"\x00\x00\x00\x04\x4d"
    schema_id, body = split_wire(wire_header(1101) + b"abc")
    assert schema_id == 1101
    assert bytes(body) == b"abc"


@pytest.mark.parametrize(("version", "path"), _samples())
def test_shipped_sample_packets_round_trip_byte_for_byte(version: str, path: Path) -> None:
    schema = load_schema(version)
    with open(path, "rb") as f:
        blocks = list(fastavro.block_reader(f))
    with open(path, "rb") as f:
        records = list(fastavro.reader(f))
    assert len(records) == 1
    assert blocks[0].num_records == 1
    payload = serialize(records[0], schema=schema)
    assert payload[:5] == wire_header(schema.schema_id)
    # The body is exactly the record as the upstream writer encoded it in the container file.
    assert payload[5:] == blocks[0].bytes_.getvalue()
    again = deserialize(payload)
    assert again == records[0]
    assert serialize(again, schema=schema) == payload


def test_sample_json_validates_and_round_trips() -> None:
    record = json.loads((PACKAGE / "alert.json").read_text())
    validate(record, schema=load_schema("11.1"))
    payload = serialize(record)
    assert serialize(deserialize(payload)) == payload


def test_many_packets_round_trip_byte_for_byte(small_visit: SyntheticVisit) -> None:
    batch = build_alert_payloads(small_visit.dia_sources, **small_visit.inputs())
    assert len(batch) == 43
    for payload in batch.payloads:
        alert = deserialize(payload)
        validate(alert)
        assert serialize(alert) == payload


def test_dicts_and_packets_are_the_same_bytes(small_visit: SyntheticVisit) -> None:
    alerts = build_alerts(small_visit.dia_sources, **small_visit.inputs())
    batch = build_alert_payloads(small_visit.dia_sources, **small_visit.inputs())
    assert [serialize(a) for a in alerts] == batch.payloads


def test_validation_names_the_field(small_visit: SyntheticVisit) -> None:
    alert = build_alerts(small_visit.dia_sources.iloc[:1], **small_visit.inputs())[0]
    alert["prvDiaSources"][3]["band"] = 7
    with pytest.raises(BadInputError, match=r"prvDiaSources\[3\]\.band") as info:
        validate(alert)
    assert info.value.reason == "alert_invalid"
    alert["prvDiaSources"][3]["band"] = "r"
    del alert["diaSource"]["psfNdata"]
    with pytest.raises(BadInputError, match=r"diaSource\.psfNdata"):
        serialize(alert)


def test_deserialize_refuses_bad_packets() -> None:
    record = json.loads((PACKAGE / "alert.json").read_text())
    payload = serialize(record)
    with pytest.raises(BadInputError, match="magic byte"):
        deserialize(b"\x01" + payload[1:])
    with pytest.raises(BadInputError, match="magic byte"):
        deserialize(b"\x00\x00")
    with pytest.raises(BadInputError, match="expected 1100"):
        deserialize(payload, schema=load_schema("11.0"))
    with pytest.raises(BadInputError, match="after the record"):
        deserialize(payload + b"\x00")
    with pytest.raises(BadInputError, match="does not decode"):
        deserialize(payload[:40])


def test_body_is_schemaless_avro(small_visit: SyntheticVisit) -> None:
    payload = build_alert_payloads(small_visit.dia_sources, **small_visit.inputs()).payloads[0]
    record = fastavro.schemaless_reader(io.BytesIO(payload[5:]), load_schema().parsed, None)
    assert record["diaSourceId"] == record["diaSource"]["diaSourceId"]
