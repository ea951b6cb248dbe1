"""Benchmark alert packets: built, validated and serialized per second on one core.

One visit-detector of 10,000 alerts (``--quick``: 1,000) is synthesized (untimed,
:func:`diaflow.alerts.synthetic.synthetic_visit`): every DiaSource has a DiaObject with a year of
history, 30 prior DiaSources and 60 forced sources, 1 % more are SSObject sources with an
SSSource row; the exposures are 4096 x 4096 (``--quick``: 2048 x 2048). Timed, on one core
(``threadpool_limits(1)``), median of several runs:

* :func:`diaflow.alerts.build_alert_payloads`: the wire-format packets with three 30 x 30
  cutouts each, split into ``build`` (select and group rows), ``validate`` (every value against
  its schema field), ``cutouts`` (FITS bytes) and ``serialize`` (Avro encoding and assembly);
* the baseline, in the same run: the same packets the usual way, :func:`build_alerts` dicts then
  ``fastavro.validate`` and ``fastavro.schemaless_writer`` per alert (on 200 alerts);
* the memory floor: only copying each packet's bytes into a new ``bytes`` object (what any
  builder must do at least once), as alerts per second;
* the Avro file sink: :class:`~diaflow.alerts.AvroFileSink` writing the visit's file;
* the packet builds again in a fresh process with ``MALLOC_TRIM_THRESHOLD_`` raised, so that
  glibc keeps the memory of freed packets for the next visit (``no_trim_*``), as a long-running
  service may be configured to.

Run it as ``diaflow bench alerts [--quick] [--json]`` or ``python benchmarks/bench_alerts.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, measure_peak, timings

if TYPE_CHECKING:
    from diaflow.alerts import AlertBatch
    from diaflow.alerts.synthetic import SyntheticVisit


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _visit(quick: bool) -> SyntheticVisit:
    from diaflow.alerts.synthetic import synthetic_visit

    n_alerts = 1_000 if quick else 10_000
    return synthetic_visit(
        n_alerts,
        n_prior_sources=30,
        n_prior_forced=60,
        n_sso=n_alerts // 100,
        shape=(2048, 2048) if quick else (4096, 4096),
        seed=11,
    )


def _time_builds(visit: SyntheticVisit, repeat: int) -> tuple[dict[str, float], AlertBatch]:
    """Median wall and CPU seconds of ``repeat`` builds of the visit's packets, per step too.

    The previous batch is dropped before each build, as a runner drops a visit's packets once
    they are sent, so that its memory can be reused.
    """
    from diaflow.alerts import build_alert_payloads

    inputs = visit.inputs()
    batch = build_alert_payloads(visit.dia_sources, **inputs)  # warm-up: imports, caches
    runs, cpu = [], []
    for _ in range(repeat):
        del batch
        c0 = time.process_time()
        t0 = time.perf_counter()
        batch = build_alert_payloads(visit.dia_sources, **inputs)
        runs.append((time.perf_counter() - t0, batch.seconds))
        cpu.append(time.process_time() - c0)
    wall = _median([r[0] for r in runs])
    n = len(batch)
    return {
        "alerts_per_s": n / wall,
        "alerts_per_cpu_s": n / _median(cpu),
        "visit_s": wall,
        "visit_cpu_s": _median(cpu),
        **{f"{k}_s": _median([r[1][k] for r in runs]) for k in batch.seconds},
    }, batch


def _no_trim_child(quick: bool, repeat: int) -> dict[str, object]:
    """The same timings in a fresh process where glibc keeps freed memory for reuse."""
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": str(2**34), "MALLOC_TOP_PAD_": str(2**29)}
    argv = [sys.executable, __file__, "--timings-only", "--json", *(["--quick"] if quick else [])]
    done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _in_process(quick: bool, repeat: int, timings_only: bool) -> dict[str, object]:
    import fastavro
    from threadpoolctl import threadpool_limits

    from diaflow.alerts import (
        AvroFileSink,
        archived_alerts,
        build_alert_payloads,
        build_alerts,
        deserialize,
        load_schema,
        serialize,
    )

    visit = _visit(quick)
    inputs = visit.inputs()
    figures: dict[str, object] = {"bench": "alerts", "alerts_per_visit": len(visit.dia_sources)}
    with threadpool_limits(1):
        timed, batch = _time_builds(visit, repeat)
        if timings_only:
            return timed
        figures.update(timed)
        wall = timed["visit_s"]
        n = len(batch)
        figures["packet_bytes_mean"] = sum(map(len, batch.payloads)) / n
        first = deserialize(batch.payloads[0])
        figures["cutout_bytes_per_packet"] = sum(
            len(first[k]) for k in ("cutoutScience", "cutoutTemplate", "cutoutDifference")
        )
        payload_mb = sum(map(len, batch.payloads)) / 1e6
        figures["payload_mb_per_visit"] = payload_mb
        figures["payload_gb_per_s"] = payload_mb / 1e3 / wall

        # The floor: one copy of every packet into a new bytes object.
        views = [memoryview(p) for p in batch.payloads]
        copy_s = _median(timings(lambda: [bytes(v) for v in views], repeat))
        figures["copy_only_alerts_per_s"] = n / copy_s

        # The baseline: dicts, then fastavro's validator and writer, one alert at a time.
        sub = visit.dia_sources.iloc[:200]
        schema = load_schema()
        t0 = time.perf_counter()
        alerts = build_alerts(sub, **inputs)
        dicts_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for alert in alerts:
            fastavro.validate(alert, schema.parsed)
        validate_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for alert in alerts:
            serialize(alert, schema=schema)
        write_s = time.perf_counter() - t0
        per_alert = (dicts_s + validate_s + write_s) / len(alerts)
        figures.update(
            {
                "fastavro_alerts_per_s": 1.0 / per_alert,
                "fastavro_validate_ms_per_alert": 1e3 * validate_s / len(alerts),
                "fastavro_serialize_ms_per_alert": 1e3 * write_s / len(alerts),
                "speedup_over_fastavro": (n / wall) * per_alert,
            }
        )

        # The Avro file sink: one container file per visit.
        packets = archived_alerts(
            batch,
            visit=1,
            detector=1,
            software_version="bench",
            generation="bench",
            issued_mjd_tai=0.0,
        )
        with tempfile.TemporaryDirectory(prefix="diaflow-bench-alerts-") as tmp:
            sink_runs = []
            for i in range(repeat):
                sink = AvroFileSink(Path(tmp) / str(i))
                t0 = time.perf_counter()
                sink.send(1, 1, packets)
                sink_runs.append(time.perf_counter() - t0)
            sink_s = _median(sink_runs)
            with open(sink.path(1, 1), "rb") as f:
                assert sum(1 for _ in fastavro.block_reader(f)) >= 1
        figures["avro_sink_alerts_per_s"] = n / sink_s
        figures["avro_sink_mb_per_s"] = payload_mb / sink_s

        peak = measure_peak(lambda: build_alert_payloads(visit.dia_sources, **inputs))
        figures["peak_increment_mib"] = peak["increment_mib"]
    return figures


def run(quick: bool = False, *, timings_only: bool = False) -> dict[str, object]:
    repeat = 3 if quick else 5
    t_start = time.perf_counter()
    figures = _in_process(quick, repeat, timings_only)
    if timings_only:
        return figures
    no_trim = _no_trim_child(quick, repeat)
    figures["no_trim_alerts_per_cpu_s"] = no_trim["alerts_per_cpu_s"]
    figures["no_trim_alerts_per_s"] = no_trim["alerts_per_s"]
    figures["no_trim_serialize_s"] = no_trim["serialize_s"]
    figures["bench_wall_s"] = time.perf_counter() - t_start
    figures.update(environment())
    for key in ("fastavro", "pandas", "lsst-alert-packet", "confluent-kafka"):
        from importlib import metadata

        try:
            figures[key] = metadata.version(key)
        except metadata.PackageNotFoundError:
            figures[key] = None
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--timings-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    figures = run(quick=args.quick, timings_only=args.timings_only)
    if args.json:
        print(json.dumps(figures, default=str))
    else:
        for key, value in figures.items():
            print(f"{key:32s} {value:.4g}" if isinstance(value, float) else f"{key:32s} {value}")


if __name__ == "__main__":
    main()
