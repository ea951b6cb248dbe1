"""Where alert packets go: Avro files, Kafka, or several at once — each exactly once.

Every sink's :meth:`~AlertSink.send` is idempotent per visit-detector: the nightly runner calls
it again after a crash (from the stored outbox, never rebuilding packets), and a packet already
delivered is not delivered twice.

- :class:`AvroFileSink` writes one Avro Object Container File per visit-detector,
  ``<visit>_<detector>.avro``, readable by any Avro reader (``fastavro.reader``) with the alert
  schema in its header. It is written to a temporary file, synced, then renamed, so it is either
  absent or complete; a file already there with the same alert ids is left as it is.
- :class:`KafkaSink` produces each packet (key: ``diaSourceId`` in decimal, value: the
  wire-format bytes) with an idempotent producer (``acks=all``). Before producing a visit it
  records the end offset of every partition in a small state file; a retry reads the topic from
  those offsets (a consumer with ``assign()``, no consumer group) and sends only the packets whose
  ids are not there yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import (
    ArchiveConflictError,
    BadInputError,
    ConfigError,
    SinkUnavailableError,
)
from ..l1db.api import ArchivedAlert
from .encode import varint
from .schema import schema_for_id
from .serialize import split_wire

__all__ = [
    "AlertSink",
    "AvroFileSink",
    "KafkaSink",
    "MultiSink",
    "SinkConfig",
    "SinkUnavailableError",
    "make_sinks",
]


@runtime_checkable
class AlertSink(Protocol):
    """Receives the packets of one visit-detector; calling it again must not duplicate any."""

    def send(self, visit: int, detector: int, packets: list[ArchivedAlert]) -> None:
        """Deliver ``packets`` (all of one visit-detector) exactly once."""


def _ids_digest(packets: Iterable[ArchivedAlert]) -> str:
    ids = sorted(p.diaSourceId for p in packets)
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()


def _schema_id(packets: Sequence[ArchivedAlert], where: str) -> int:
    ids = {p.schema_id for p in packets}
    if len(ids) != 1:
        raise BadInputError(
            "alert_mixed_schemas", f"{where}: packets of one visit use schema ids {sorted(ids)}"
        )
    return ids.pop()


def _public(node: Any) -> Any:
    """A schema definition without fastavro's private ``__*`` keys, for JSON."""
    if isinstance(node, dict):
        return {k: _public(v) for k, v in node.items() if not str(k).startswith("__")}
    if isinstance(node, list):
        return [_public(v) for v in node]
    return node


def _avro_bytes(data: bytes) -> bytes:
    return varint(len(data)) + data


# ---- Avro files ------------------------------------------------------------------------------

_OCF_MAGIC = b"Obj\x01"
_BLOCK_RECORDS = 1000


class AvroFileSink:
    """One Avro Object Container File per visit-detector in ``directory``.

    The container is written directly from the packets' Avro bodies (a container block is its
    records' binary encodings end to end), so the records are exactly the ones sent elsewhere
    and nothing is re-encoded. The header carries the alert schema, ``diaflow.schema_id`` and a
    digest of the sorted alert ids (``diaflow.ids_sha256``) used to recognise a retry.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path(self, visit: int, detector: int) -> Path:
        """The file of one visit-detector."""
        return self.directory / f"{visit}_{detector}.avro"

    def send(self, visit: int, detector: int, packets: list[ArchivedAlert]) -> None:
        """Write the visit's file, unless it exists already with the same alert ids.

        Raises
        ------
        ArchiveConflictError
            If the file exists with other alert ids: it is never overwritten.
        """
        if not packets:
            return
        path = self.path(visit, detector)
        digest = _ids_digest(packets)
        if path.exists():
            found = self.read_digest(path)
            if found == digest:
                return
            raise ArchiveConflictError(
                f"{path} exists with other alerts (ids digest {found}, sending {digest}); "
                "alert files are never overwritten — move it away if it is known to be bad"
            )
        schema_id = _schema_id(packets, f"visit {visit}/{detector}")
        schema = schema_for_id(schema_id)
        metadata = {
            "avro.schema": json.dumps(_public(schema.definition)).encode(),
            "avro.codec": b"null",
            "diaflow.schema_id": str(schema_id).encode(),
            "diaflow.ids_sha256": digest.encode(),
        }
        sync = hashlib.md5(f"diaflow alerts {visit}_{detector}".encode()).digest()
        header = [_OCF_MAGIC, varint(len(metadata))]
        for key, value in metadata.items():
            header += [_avro_bytes(key.encode()), _avro_bytes(value)]
        header += [b"\x00", sync]
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(b"".join(header))
            for start in range(0, len(packets), _BLOCK_RECORDS):
                bodies = [split_wire(p.payload)[1] for p in packets[start : start + _BLOCK_RECORDS]]
                size = sum(len(b) for b in bodies)
                f.write(varint(len(bodies)) + varint(size))
                f.writelines(bodies)
                f.write(sync)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.directory)

    @staticmethod
    def read_digest(path: Path) -> str | None:
        """The ids digest in a file's header (None if it has none)."""
        import fastavro

        with open(path, "rb") as f:
            metadata = fastavro.reader(f).metadata
        return metadata.get("diaflow.ids_sha256")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not every platform opens directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- Kafka -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _State:
    start: dict[int, int]
    digest: str
    done: bool


class KafkaSink:
    """Produce packets to a Kafka topic, exactly once per ``diaSourceId`` across crashes.

    Parameters
    ----------
    bootstrap_servers
        ``host:port[,host:port...]`` of the brokers.
    topic
        An existing topic.
    state_dir
        Where the per-visit state files (start offsets) live; keep it with the database.
    timeout_s
        How long to wait for the broker before raising :class:`SinkUnavailableError`.
    producer_config
        Extra librdkafka settings (they cannot turn off ``acks=all`` or idempotence).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        state_dir: str | os.PathLike[str],
        timeout_s: float = 30.0,
        producer_config: dict[str, Any] | None = None,
    ) -> None:
        if not bootstrap_servers or not topic:
            raise ConfigError("KafkaSink needs bootstrap_servers and a topic")
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.state_dir = Path(state_dir)
        self.timeout_s = timeout_s
        self._config = {
            **(producer_config or {}),
            "bootstrap.servers": bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
            "message.timeout.ms": int(timeout_s * 1000),
            "message.max.bytes": 10_000_000,
        }
        self._producer: Any = None

    # -- state files
    def _state_path(self, visit: int, detector: int) -> Path:
        return self.state_dir / self.topic / f"{visit}_{detector}.json"

    def _read_state(self, visit: int, detector: int) -> _State | None:
        path = self._state_path(visit, detector)
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        return _State({int(k): int(v) for k, v in raw["start"].items()}, raw["digest"], raw["done"])

    def _write_state(self, visit: int, detector: int, state: _State) -> None:
        path = self._state_path(visit, detector)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump({"start": state.start, "digest": state.digest, "done": state.done}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    # -- broker
    def _unavailable(self, what: str, exc: object) -> SinkUnavailableError:
        return SinkUnavailableError(
            f"Kafka at {self.bootstrap_servers} (topic {self.topic}): {what}: {exc}; "
            "nothing was lost, send this visit again later"
        )

    def _producer_client(self) -> Any:
        if self._producer is None:
            from confluent_kafka import Producer

            self._producer = Producer(self._config)
        return self._producer

    def _partitions(self) -> list[int]:
        from confluent_kafka import KafkaException

        try:
            # All topics: asking for one by name makes some brokers create it.
            meta = self._producer_client().list_topics(timeout=self.timeout_s)
        except KafkaException as exc:
            raise self._unavailable("cannot read the topic's metadata", exc) from exc
        topic = meta.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            error = None if topic is None else topic.error
            raise ConfigError(f"Kafka topic {self.topic!r} is not usable ({error}); create it")
        return sorted(topic.partitions)

    def _consumer(self) -> Any:
        from confluent_kafka import Consumer

        return Consumer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": "diaflow-alert-sink-check",  # required by the client; never joined
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
            }
        )

    def _end_offsets(self, consumer: Any, partitions: list[int]) -> dict[int, tuple[int, int]]:
        from confluent_kafka import KafkaException, TopicPartition

        out = {}
        for p in partitions:
            try:
                out[p] = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=self.timeout_s
                )
            except KafkaException as exc:
                raise self._unavailable(f"cannot read the offsets of partition {p}", exc) from exc
        return out

    def _keys_since(self, consumer: Any, start: dict[int, int], partitions: list[int]) -> set[int]:
        """diaSourceIds of the messages written to the topic since ``start``."""
        from confluent_kafka import KafkaError, TopicPartition

        ends = self._end_offsets(consumer, partitions)
        todo = {}
        for p in partitions:
            low, high = ends[p]
            first = max(start.get(p, low), low)
            if high > first:
                todo[p] = (first, high)
        if not todo:
            return set()
        consumer.assign([TopicPartition(self.topic, p, first) for p, (first, _) in todo.items()])
        keys: set[int] = set()
        deadline = time.monotonic() + self.timeout_s
        while todo:
            if time.monotonic() > deadline:
                raise self._unavailable("timed out reading back this visit's messages", todo)
            for msg in consumer.consume(num_messages=1000, timeout=1.0):
                p = msg.partition()
                if msg.error() is not None:
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        if p in todo and msg.offset() >= todo[p][1]:
                            del todo[p]
                        continue
                    raise self._unavailable("reading back this visit's messages", msg.error())
                if msg.key() is not None:
                    keys.add(int(msg.key()))
                if p in todo and msg.offset() + 1 >= todo[p][1]:
                    del todo[p]
        return keys

    # -- send
    def send(self, visit: int, detector: int, packets: list[ArchivedAlert]) -> None:
        """Produce the packets of a visit not already on the topic since its recorded start.

        Raises
        ------
        SinkUnavailableError
            If the broker cannot be reached or does not confirm every packet (retry later).
        ConfigError
            If the topic does not exist.
        """
        if not packets:
            return
        digest = _ids_digest(packets)
        state = self._read_state(visit, detector)
        if state is not None and state.done and state.digest == digest:
            return
        partitions = self._partitions()
        consumer = self._consumer()
        try:
            if state is None:
                ends = self._end_offsets(consumer, partitions)
                state = _State({p: ends[p][1] for p in partitions}, digest, False)
                self._write_state(visit, detector, state)
                todo = packets
            else:
                present = self._keys_since(consumer, state.start, partitions)
                todo = [p for p in packets if p.diaSourceId not in present]
        finally:
            consumer.close()
        self._produce(todo)
        self._write_state(visit, detector, _State(state.start, digest, True))

    def _produce(self, packets: Sequence[ArchivedAlert]) -> None:
        producer = self._producer_client()
        errors: list[str] = []

        def report(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(f"{msg.key()!r}: {err}")

        for p in packets:
            while True:
                try:
                    producer.produce(
                        self.topic,
                        key=str(p.diaSourceId).encode(),
                        value=p.payload,
                        on_delivery=report,
                    )
                    break
                except BufferError:  # local queue full: let deliveries drain
                    producer.poll(0.1)
            producer.poll(0)
        left = producer.flush(self.timeout_s)
        if left or errors:
            raise self._unavailable(
                f"{left} packets unconfirmed, {len(errors)} failed", errors[:3] or "timeout"
            )

    def close(self) -> None:
        """Deliver what is queued and drop the client."""
        if self._producer is not None:
            self._producer.flush(self.timeout_s)
            self._producer = None


# ---- several ---------------------------------------------------------------------------------


class MultiSink:
    """Send to several sinks in turn; a retry repeats them all (each skips what it has)."""

    def __init__(self, sinks: Sequence[AlertSink]) -> None:
        self.sinks = list(sinks)

    def send(self, visit: int, detector: int, packets: list[ArchivedAlert]) -> None:
        """Send to every sink, in order; the first failure is raised."""
        for sink in self.sinks:
            sink.send(visit, detector, packets)


@dataclass(frozen=True, kw_only=True)
class SinkConfig:
    """Which sinks receive alerts; several may be set (all receive every packet)."""

    avro_dir: Path | None = None
    """Directory of the per-visit Avro files (the default sink of one machine)."""
    kafka_bootstrap: str | None = None
    """Kafka brokers, ``host:port[,...]``; None: no Kafka."""
    kafka_topic: str = "alerts"
    """Kafka topic (must exist)."""
    kafka_state_dir: Path | None = None
    """Where the Kafka sink keeps its per-visit start offsets (required with Kafka)."""
    kafka_timeout_s: float = 30.0
    """Seconds to wait for the broker before giving up on a visit (it is retried later)."""

    def __post_init__(self) -> None:
        if self.kafka_bootstrap is not None and self.kafka_state_dir is None:
            raise ConfigError("kafka_state_dir is required when kafka_bootstrap is set")
        if self.kafka_timeout_s <= 0:
            raise ConfigError(f"kafka_timeout_s must be > 0, got {self.kafka_timeout_s}")


def make_sinks(config: SinkConfig) -> AlertSink:
    """The sink (or :class:`MultiSink`) a configuration names.

    Raises
    ------
    ConfigError
        If no sink is configured.
    """
    sinks: list[AlertSink] = []
    if config.avro_dir is not None:
        sinks.append(AvroFileSink(config.avro_dir))
    if config.kafka_bootstrap is not None:
        assert config.kafka_state_dir is not None
        sinks.append(
            KafkaSink(
                config.kafka_bootstrap,
                config.kafka_topic,
                state_dir=config.kafka_state_dir,
                timeout_s=config.kafka_timeout_s,
            )
        )
    if not sinks:
        raise ConfigError("no alert sink configured: set avro_dir and/or kafka_bootstrap")
    return sinks[0] if len(sinks) == 1 else MultiSink(sinks)
