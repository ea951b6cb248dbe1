import io

import fastavro
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from diaflow.alerts import (
    AlertConfig,
    archived_alerts,
    build_alert_payloads,
    build_alerts,
    deserialize,
    load_schema,
    serialize,
)
from diaflow.alerts.synthetic import SyntheticVisit
from diaflow.errors import BadInputError, ConfigError


def _alerts(
    visit: SyntheticVisit, sources: pd.DataFrame | None = None, **changes: object
) -> list[dict]:
    inputs = {**visit.inputs(), **changes}
    return build_alerts(visit.dia_sources if sources is None else sources, **inputs)


def test_every_alert_validates_against_the_schema(small_visit: SyntheticVisit) -> None:
    alerts = _alerts(small_visit)
    parsed = load_schema().parsed
    assert len(alerts) == 43
    for alert in alerts:
        assert fastavro.validate(alert, parsed)
    ids = [a["diaSourceId"] for a in alerts]
    assert ids == sorted(ids)
    assert all(a["diaSource"]["diaSourceId"] == a["diaSourceId"] for a in alerts)


def test_only_associated_sources_get_an_alert(small_visit: SyntheticVisit) -> None:
    src = small_visit.dia_sources.iloc[:4].copy()
    src["diaObjectId"] = pd.array([src["diaObjectId"].iloc[0], None, 0, None], dtype="Int64")
    src["ssObjectId"] = pd.array([None, 77, None, 0], dtype="Int64")
    alerts = _alerts(small_visit, src)
    assert [a["diaSourceId"] for a in alerts] == src["diaSourceId"].iloc[:2].tolist()
    sso = alerts[1]
    assert sso["diaSource"]["ssObjectId"] == 77
    assert sso["diaSource"]["diaObjectId"] is None
    assert sso["diaObject"] is None
    assert sso["prvDiaSources"] is None
    assert alerts[0]["diaSource"]["ssObjectId"] is None


def test_history_is_the_objects_prior_year_oldest_first(small_visit: SyntheticVisit) -> None:
    src = small_visit.dia_sources.iloc[:1]
    obj = int(src["diaObjectId"].iloc[0])
    mjd = small_visit.science.info.mjd_tai
    prv = small_visit.prv_dia_sources.iloc[:6].copy()
    prv["diaObjectId"] = pd.array([obj, obj, obj, obj, obj, obj + 1], dtype="Int64")
    prv["midpointMjdTai"] = [mjd - 3, mjd - 400, mjd - 1, mjd, mjd - 200, mjd - 2]
    prv["visit"] = [11, 12, 13, small_visit.science.info.visit, 15, 16]
    forced = small_visit.prv_dia_forced_sources.iloc[:3].copy()
    forced["diaObjectId"] = obj
    forced["midpointMjdTai"] = [mjd - 5, mjd - 365.0, mjd - 366]
    forced["visit"] = [21, 22, 23]
    (alert,) = _alerts(small_visit, src, prv_dia_sources=prv, prv_dia_forced_sources=forced)
    assert [s["visit"] for s in alert["prvDiaSources"]] == [15, 11, 13]
    assert [s["visit"] for s in alert["prvDiaForcedSources"]] == [22, 21]
    (short,) = _alerts(
        small_visit,
        src,
        prv_dia_sources=prv,
        prv_dia_forced_sources=None,
        config=AlertConfig(history_days=2.5),
    )
    assert [s["visit"] for s in short["prvDiaSources"]] == [13]
    assert short["prvDiaForcedSources"] is None


def test_latest_dia_object_version_and_nan_handling(small_visit: SyntheticVisit) -> None:
    src = small_visit.dia_sources.iloc[:1].copy()
    src["psfFlux"] = np.float32(np.nan)
    src["ra"] = np.nan  # not nullable in the schema: stays NaN
    obj = small_visit.dia_objects[
        small_visit.dia_objects["diaObjectId"] == src["diaObjectId"].iloc[0]
    ]
    old = obj.copy()
    old["validityStartMjdTai"] -= 10
    old["nDiaSources"] = 1
    objects = pd.concat([obj, old, small_visit.dia_objects.iloc[5:9]])
    (alert,) = _alerts(small_visit, src, dia_objects=objects)
    assert alert["diaSource"]["psfFlux"] is None
    assert np.isnan(alert["diaSource"]["ra"])
    assert alert["diaObject"]["nDiaSources"] == int(obj["nDiaSources"].iloc[0])
    assert alert["diaObject"]["u_psfFluxMean"] is None  # never observed in u
    assert alert["diaSource"]["extendedness"] is None  # a field diaflow does not produce
    assert alert["mpc_orbits"] is None
    payload = serialize(alert)
    assert np.isnan(deserialize(payload)["diaSource"]["ra"])


def test_missing_dia_object_is_an_error(small_visit: SyntheticVisit) -> None:
    with pytest.raises(BadInputError, match="absent from dia_objects") as info:
        _alerts(small_visit, dia_objects=small_visit.dia_objects.iloc[1:])
    assert info.value.reason == "alert_object_missing"


def test_a_value_that_does_not_fit_names_its_field(small_visit: SyntheticVisit) -> None:
    src = small_visit.dia_sources.iloc[:2].copy()
    src["psfNdata"] = np.array([3, 2**40], dtype=np.int64)
    with pytest.raises(BadInputError, match=r"diaSource\.psfNdata: value outside the 32-bit"):
        build_alert_payloads(src, **small_visit.inputs())


def test_missing_columns_are_named(small_visit: SyntheticVisit) -> None:
    with pytest.raises(BadInputError, match=r"lacks columns \['x'\]") as info:
        _alerts(small_visit, small_visit.dia_sources.drop(columns=["x"]))
    assert info.value.reason == "alert_missing_columns"


def test_ss_sources_attach_by_dia_source_id(small_visit: SyntheticVisit) -> None:
    alerts = _alerts(small_visit)
    with_ss = [a for a in alerts if a["ssSource"] is not None]
    assert len(with_ss) == 3
    for a in with_ss:
        assert a["ssSource"]["diaSourceId"] == a["diaSourceId"]
        assert a["ssSource"]["ssObjectId"] == a["diaSource"]["ssObjectId"]
        assert a["ssSource"]["designation"].startswith("2026 A")


def test_cutouts_are_centred_on_the_source(small_visit: SyntheticVisit) -> None:
    alert = _alerts(small_visit)[0]
    for field, exposure in [
        ("cutoutScience", small_visit.science),
        ("cutoutTemplate", small_visit.template),
        ("cutoutDifference", small_visit.difference),
    ]:
        hdul = fits.open(io.BytesIO(alert[field]))
        x0, y0 = hdul[0].header["X0"], hdul[0].header["Y0"]
        assert (x0, y0) == (
            int(np.floor(alert["diaSource"]["x"] + 0.5)) - 15,
            int(np.floor(alert["diaSource"]["y"] + 0.5)) - 15,
        )
        assert hdul[0].header["VISIT"] == exposure.info.visit


def test_chunks_do_not_change_the_packets(small_visit: SyntheticVisit) -> None:
    whole = build_alert_payloads(small_visit.dia_sources, **small_visit.inputs())
    chunked = build_alert_payloads(
        small_visit.dia_sources, **small_visit.inputs(), config=AlertConfig(chunk_alerts=7)
    )
    assert chunked.payloads == whole.payloads
    assert set(whole.seconds) == {"build", "validate", "cutouts", "serialize"}


def test_an_older_schema_version(small_visit: SyntheticVisit) -> None:
    config = AlertConfig(schema_version="11.0")
    batch = build_alert_payloads(small_visit.dia_sources, **small_visit.inputs(), config=config)
    assert batch.schema_id == 1100
    alert = deserialize(batch.payloads[0])
    assert fastavro.validate(alert, load_schema("11.0").parsed)


def test_no_alert_when_nothing_is_associated(small_visit: SyntheticVisit) -> None:
    src = small_visit.dia_sources.iloc[:3].copy()
    src["diaObjectId"] = pd.array([None] * 3, dtype="Int64")
    src["ssObjectId"] = pd.array([None] * 3, dtype="Int64")
    assert _alerts(small_visit, src) == []
    batch = build_alert_payloads(src, **small_visit.inputs())
    assert len(batch) == 0


def test_archived_alerts_carry_the_provenance(small_visit: SyntheticVisit) -> None:
    batch = build_alert_payloads(small_visit.dia_sources.iloc[:3], **small_visit.inputs())
    rows = archived_alerts(
        batch,
        visit=5,
        detector=42,
        software_version="0.1.0",
        generation="L1-0",
        issued_mjd_tai=60800.3,
    )
    assert [r.diaSourceId for r in rows] == batch.dia_source_ids.tolist()
    assert rows[0].payload == batch.payloads[0]
    assert rows[0].schema_id == 1101
    assert (rows[0].generation, rows[0].visit, rows[0].detector) == ("L1-0", 5, 42)


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="cutout_size_px"):
        AlertConfig(cutout_size_px=0)
    with pytest.raises(ConfigError, match="history_days"):
        AlertConfig(history_days=0.0)
