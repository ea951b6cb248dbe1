"""Alert packets: the Rubin alert schema, cutouts, packet building, serialization and sinks.

One packet per associated DiaSource of a live visit, in the latest Rubin alert schema
(``lsst-alert-packet``), serialized in the Confluent wire format and sent to sinks (Avro files,
Kafka) exactly once. See ``docs/alerts.md``.
"""

from .cutouts import CUTOUT_SIZE_PX, CutoutMaker, Cutouts, make_cutouts, visit_cutouts
from .packet import AlertBatch, AlertConfig, archived_alerts, build_alert_payloads, build_alerts
from .schema import AlertSchema, latest_version, load_schema, schema_for_id
from .serialize import deserialize, serialize, split_wire, validate, wire_header
from .sinks import (
    AlertSink,
    AvroFileSink,
    KafkaSink,
    MultiSink,
    SinkConfig,
    SinkUnavailableError,
    make_sinks,
)

__all__ = [
    "CUTOUT_SIZE_PX",
    "AlertBatch",
    "AlertConfig",
    "AlertSchema",
    "AlertSink",
    "AvroFileSink",
    "CutoutMaker",
    "Cutouts",
    "KafkaSink",
    "MultiSink",
    "SinkConfig",
    "SinkUnavailableError",
    "archived_alerts",
    "build_alert_payloads",
    "build_alerts",
    "deserialize",
    "latest_version",
    "load_schema",
    "make_cutouts",
    "make_sinks",
    "schema_for_id",
    "serialize",
    "split_wire",
    "validate",
    "visit_cutouts",
    "wire_header",
]
