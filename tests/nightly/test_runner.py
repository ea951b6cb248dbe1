"""The nightly runner: nights of simulated visits into the Level 1 database and out as alerts."""

from __future__ import annotations

import io
import re
import threading
import uuid
from pathlib import Path

import fastavro
import numpy as np
import pandas as pd
import psycopg
import pytest
from astropy.io import fits

from diaflow.alerts import deserialize
from diaflow.l1db import L1DbConfig, open_archive, open_l1db
from diaflow.l1db.api import Region
from diaflow.nightly.prompt import PromptConfig
from diaflow.nightly.repo import Repo
from diaflow.nightly.runner import NightConfig, NightSummary, run_night
from simdata import NightSurvey

WCS_KEY = re.compile(r"(CTYPE|CRVAL|CRPIX|CUNIT|CDELT)\d|(CD|PC)\d_\d|(A|B|AP|BP)_")


def _tables(repo: Repo) -> dict[str, pd.DataFrame]:
    """Every table of the current generation, in a canonical order, minus processing times."""
    sky = Region(0.0, 0.0, 180.0)
    with open_l1db(L1DbConfig(path=repo.l1db_dir), readonly=True) as db:
        out = {
            "DiaSource": db.dia_sources(sky, 1e6, days=1e6).sort_values("diaSourceId"),
            "DiaForcedSource": db.dia_forced_sources(sky, 1e6, days=1e6).sort_values(
                "diaForcedSourceId"
            ),
            "DiaObject": db.dia_objects(sky).sort_values("diaObjectId"),
            "Visit": db.visits().sort_values(["visit", "detector"]),
        }
    drop = ["timeProcessedMjdTai"]
    return {
        k: v.drop(columns=[c for c in drop if c in v.columns]).reset_index(drop=True)
        for k, v in out.items()
    }


class _Reader(threading.Thread):
    """Polls the database while nights run: every read must succeed and show whole visits."""

    def __init__(self, repo: Repo) -> None:
        super().__init__(daemon=True)
        self.repo, self.stop, self.reads, self.problems = repo, threading.Event(), 0, []

    def run(self) -> None:
        sky = Region(0.0, 0.0, 180.0)
        while not self.stop.wait(0.05):
            if not (self.repo.l1db_dir / "CURRENT").exists():
                continue
            try:
                with open_l1db(L1DbConfig(path=self.repo.l1db_dir), readonly=True) as db:
                    # Two reads are two snapshots: sources first, so that every visit they
                    # show has committed its Visit row by the time the rows are read.
                    sources = db.dia_sources(sky, 1e6, days=1e6)
                    visits = db.visits()
            except Exception as exc:  # any error at all is what this reader looks for
                self.problems.append(f"read failed: {exc!r}")
                continue
            self.reads += 1
            per_visit = sources.groupby(["visit", "detector"]).size()
            for v in visits.itertuples():
                n = int(per_visit.get((v.visit, v.detector), 0))
                if n not in (0, v.n_dia_sources):
                    self.problems.append(f"visit {v.visit}/{v.detector}: {n} of {v.n_dia_sources}")
            stored = set(zip(visits["visit"], visits["detector"], strict=True))
            for key in per_visit.index:
                if tuple(key) not in stored:
                    self.problems.append(f"sources of {key} visible before its Visit row")


@pytest.fixture(scope="module")
def night_run(night_survey: NightSurvey, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Nights 4-7 processed once, night by night, while a reader polls the database."""
    repo = night_survey.fresh_repo(tmp_path_factory.mktemp("night_run"))
    reader = _Reader(repo)
    reader.start()
    summaries = []
    try:
        for night in sorted(set(night_survey.visits["night"]) - set(range(4))):
            summaries.append(
                run_night(
                    night_survey.inputs([night]),
                    repo,
                    refcat=night_survey.refcat,
                    label=f"night-{night}",
                )
            )
    finally:
        reader.stop.set()
        reader.join()
    return night_survey, repo, summaries, reader


def test_every_visit_is_stored_and_alerted(night_run) -> None:  # type: ignore[no-untyped-def]
    s, repo, summaries, _ = night_run
    outcomes = [o for summary in summaries for o in summary.outcomes]
    assert len(outcomes) == len(s.inputs())
    assert {o.status for o in outcomes} == {"alerted"}, [o.reason for o in outcomes]
    tables = _tables(repo)
    assert len(tables["Visit"]) == len(outcomes)
    n_alerts = sum(o.n_alerts for o in outcomes)
    assert n_alerts > 50
    with open_archive(L1DbConfig(path=repo.l1db_dir)) as archive:
        assert archive.count() == n_alerts
    # One alert per DiaSource that has an object; none for the ones left unassociated.
    ds = tables["DiaSource"]
    has_object = ds["diaObjectId"].fillna(0).astype(np.int64).ne(0) | ds["ssObjectId"].fillna(
        0
    ).astype(np.int64).ne(0)
    assert has_object.sum() == n_alerts
    # Every DiaSource's object exists, and each DiaObject's count matches its sources.
    objects = tables["DiaObject"].set_index("diaObjectId")
    linked = ds[ds["diaObjectId"].fillna(0).astype(np.int64) != 0]
    counts = linked.groupby("diaObjectId").size()
    assert set(counts.index) <= set(objects.index)
    assert (objects.loc[counts.index, "nDiaSources"].to_numpy() == counts.to_numpy()).all()


def test_readers_during_the_nights_saw_whole_visits(night_run) -> None:  # type: ignore[no-untyped-def]
    *_, reader = night_run
    assert reader.reads >= 20
    assert reader.problems == []


def test_alert_files_are_rubin_packets(night_run) -> None:  # type: ignore[no-untyped-def]
    _, repo, _, _ = night_run
    files = sorted(repo.alerts_dir.glob("*.avro"))
    assert files
    n = 0
    with open_archive(L1DbConfig(path=repo.l1db_dir)) as archive:
        for path in files:
            with open(path, "rb") as f:
                reader = fastavro.reader(f)
                assert "lsst.v11" in str(reader.writer_schema.get("name", "")) or reader.schema
                for record in reader:
                    n += 1
                    archived = archive.get(record["diaSourceId"])
                    assert archived is not None
                    decoded = deserialize(archived.payload)
                    assert decoded["diaSourceId"] == record["diaSourceId"]
                    assert decoded["diaSource"]["psfFlux"] == pytest.approx(
                        record["diaSource"]["psfFlux"], nan_ok=True
                    )
                    with fits.open(io.BytesIO(record["cutoutDifference"])) as cut:
                        shapes = [h.data.shape for h in cut if h.data is not None]
                    assert shapes
                    assert all(shape == (30, 30) for shape in shapes)
        assert n == archive.count()


def _truth_positions(s: NightSurvey) -> pd.DataFrame:
    """True positions of everything that can make a DiaSource: variables, transients, asteroids
    (per visit)."""
    static = s.truth("static")
    variables = static[static["var_type"] != "none"][["id", "ra_deg", "dec_deg"]]
    transients = s.truth("transients")[["id", "ra_deg", "dec_deg"]]
    return pd.concat([variables, transients], ignore_index=True)


def test_association_against_truth(night_run) -> None:  # type: ignore[no-untyped-def]
    s, repo, _, _ = night_run
    ds = _tables(repo)["DiaSource"]
    ds = ds[ds["diaObjectId"].fillna(0).astype(np.int64) != 0]
    truth = _truth_positions(s)
    cosd = np.cos(np.deg2rad(truth["dec_deg"].mean()))

    def sep(a_ra, a_dec, b_ra, b_dec):  # type: ignore[no-untyped-def]
        return np.hypot((a_ra - b_ra) * cosd, a_dec - b_dec) * 3600

    # Isolated true sources: no other variable or transient within 2".
    d = sep(
        truth["ra_deg"].to_numpy()[:, None],
        truth["dec_deg"].to_numpy()[:, None],
        truth["ra_deg"].to_numpy()[None, :],
        truth["dec_deg"].to_numpy()[None, :],
    )
    isolated = (d < 2.0).sum(axis=1) == 1
    # Each DiaSource to its nearest true source within 0.5".
    dd = sep(
        ds["ra"].to_numpy()[:, None],
        ds["dec"].to_numpy()[:, None],
        truth["ra_deg"].to_numpy()[None, :],
        truth["dec_deg"].to_numpy()[None, :],
    )
    nearest = dd.argmin(axis=1)
    matched = dd[np.arange(len(ds)), nearest] < 0.5
    pairs = pd.DataFrame(
        {
            "truth": truth["id"].to_numpy()[nearest[matched]],
            "isolated": isolated[nearest[matched]],
            "diaObjectId": ds["diaObjectId"].to_numpy()[matched],
        }
    )
    iso = pairs[pairs["isolated"]]
    per_truth = iso.groupby("truth")["diaObjectId"]
    on_main = per_truth.agg(lambda x: x.value_counts().iloc[0]).sum()
    assert len(iso) >= 30
    assert on_main / len(iso) >= 0.99, f"{on_main}/{len(iso)} on their source's DiaObject"
    # No DiaObject holds the DiaSources of two true sources 2" apart or more.
    pos = truth.set_index("id")
    for _, group in pairs.groupby("diaObjectId"):
        ids = group["truth"].unique()
        if len(ids) > 1:
            p = pos.loc[ids]
            dmax = sep(
                p["ra_deg"].to_numpy()[:, None],
                p["dec_deg"].to_numpy()[:, None],
                p["ra_deg"].to_numpy()[None, :],
                p["dec_deg"].to_numpy()[None, :],
            ).max()
            assert dmax < 2.0


def test_a_second_run_changes_nothing(night_run) -> None:  # type: ignore[no-untyped-def]
    s, repo, _, _ = night_run
    before = _tables(repo)
    with open_archive(L1DbConfig(path=repo.l1db_dir)) as archive:
        n_before = archive.count()
    again = run_night(s.inputs(), repo, refcat=s.refcat, label="again")
    assert {o.status for o in again.outcomes} == {"skipped"}
    after = _tables(repo)
    for name in before:
        pd.testing.assert_frame_equal(before[name], after[name])
    with open_archive(L1DbConfig(path=repo.l1db_dir)) as archive:
        assert archive.count() == n_before


def _summary_ok(summary: NightSummary) -> None:
    for o in summary.outcomes:
        assert o.status in ("alerted", "skipped"), (o.path, o.status, o.reason)


def test_bad_inputs_are_quarantined_and_the_night_goes_on(
    night_survey: NightSurvey, tmp_path: Path
) -> None:
    s = night_survey
    repo = s.fresh_repo(tmp_path / "repo")
    good = s.inputs([4])
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    # Truncated file.
    data = good[0].read_bytes()
    truncated = bad_dir / "truncated.fits"
    truncated.write_bytes(data[: len(data) // 3])
    # Not FITS at all.
    garbage = bad_dir / "garbage.fits"
    garbage.write_bytes(b"SIMPLE  = nonsense" * 100)
    # Every pixel NaN or inf.
    with fits.open(good[1]) as hdul:
        hdul["IMAGE"].data[:] = np.nan
        hdul["IMAGE"].data[::2] = np.inf
        hdul[0].header["VISIT"] = 777
        hdul.writeto(bad_dir / "nan.fits")
    # No WCS.
    with fits.open(good[2]) as hdul:
        for hdu in hdul:
            for key in list(hdu.header):
                if WCS_KEY.match(key):
                    del hdu.header[key]
        hdul[0].header["VISIT"] = 778
        hdul.writeto(bad_dir / "nowcs.fits")
    # The same visit twice.
    duplicate = bad_dir / "duplicate.fits"
    duplicate.write_bytes(good[0].read_bytes())

    inputs = [*good, truncated, garbage, bad_dir / "nan.fits", bad_dir / "nowcs.fits", duplicate]
    summary = run_night(inputs, repo, refcat=s.refcat, label="bad")
    by_path = {Path(o.path).name: o for o in summary.outcomes}
    for name in ("truncated.fits", "garbage.fits", "nan.fits", "nowcs.fits", "duplicate.fits"):
        assert by_path[name].status == "quarantined", (name, by_path[name])
        assert by_path[name].reason
    assert "duplicate" in by_path["duplicate.fits"].reason
    assert all(by_path[p.name].status == "alerted" for p in good)
    logged = {Path(e["path"]).name for e in repo.quarantine_log()}
    assert logged == {"truncated.fits", "garbage.fits", "nan.fits", "nowcs.fits", "duplicate.fits"}
    # Nothing lost: the inputs are where they were.
    assert truncated.exists()
    assert duplicate.exists()


PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"


def _pg_problem() -> str | None:
    try:
        with psycopg.connect(PG_DSN):
            return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]


@pytest.mark.postgres
def test_postgres_connection_dropped_mid_night(night_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The server drops every connection of the runner again and again; the runner reconnects
    and retries, and the night ends with the same rows as on SQLite."""
    problem = _pg_problem()
    if problem:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is unreachable ({problem})")
    s, sqlite_repo, _, _ = night_run
    prefix = f"t_night_{uuid.uuid4().hex[:8]}_"
    config = NightConfig(
        l1db=L1DbConfig(backend="postgres", dsn=PG_DSN, pg_prefix=prefix),
        retries=6,
        retry_wait_s=0.2,
    )
    repo = s.fresh_repo(tmp_path / "repo")
    stop = threading.Event()
    killed = []

    def drop_connections() -> None:
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            while not stop.wait(2.5):
                rows = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = 'test' AND pid <> pg_backend_pid() "
                    "AND application_name LIKE %s",
                    (f"diaflow {prefix}%",),
                ).fetchall()
                killed.append(len(rows))

    killer = threading.Thread(target=drop_connections, daemon=True)
    killer.start()
    try:
        summary = run_night(s.inputs([4]), repo, refcat=s.refcat, config=config, label="pg")
    finally:
        stop.set()
        killer.join()
    try:
        assert sum(killed) >= 2, "the test should have dropped connections mid-night"
        assert {o.status for o in summary.outcomes} == {"alerted"}, [
            (o.status, o.reason) for o in summary.outcomes
        ]
        visits = {(int(o.visit), int(o.detector)) for o in summary.outcomes}
        sky = Region(0.0, 0.0, 180.0)
        with open_l1db(config.l1db, readonly=True) as db:  # type: ignore[arg-type]
            pg_sources = db.dia_sources(sky, 1e6, days=1e6)
        expected = _tables(sqlite_repo)["DiaSource"]
        expected = expected[
            [
                (int(v), int(d)) in visits
                for v, d in zip(expected["visit"], expected["detector"], strict=True)
            ]
        ]
        assert sorted(pg_sources["diaSourceId"]) == sorted(expected["diaSourceId"])
        got = pg_sources.set_index("diaSourceId").loc[expected["diaSourceId"], "diaObjectId"]
        assert (got.fillna(0).to_numpy() == expected["diaObjectId"].fillna(0).to_numpy()).all()
        with open_archive(config.l1db) as archive:  # type: ignore[arg-type]
            assert archive.count() == sum(o.n_alerts for o in summary.outcomes)
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            schemas = admin.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (prefix + "%",)
            ).fetchall()
            for (name,) in schemas:
                admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def test_known_asteroids_are_attributed_and_alerted_with_their_ss_source(
    night_survey: NightSurvey, tmp_path: Path
) -> None:
    """With predictions of the known asteroids (here: their true positions, blurred by 0.1″),
    their DiaSources become SSSources, get no DiaObject, and their alerts carry the SSSource."""
    s = night_survey
    truth = s.truth("ss_positions")
    rng = np.random.default_rng(5)
    blur = 0.1 / 3600

    def predictor(info, region):  # type: ignore[no-untyped-def]
        rows = truth[(truth["visit"] == info.visit) & (truth["detector"] == info.detector)]
        return pd.DataFrame(
            {
                "ssObjectId": rows["ss_id"].to_numpy(np.int64) + 1,
                "designation": [f"T{i}" for i in rows["ss_id"]],
                "ra": rows["ra_deg"].to_numpy() + rng.normal(0, blur, len(rows)),
                "dec": rows["dec_deg"].to_numpy() + rng.normal(0, blur, len(rows)),
                "uncertainty_arcsec": 0.1,
            }
        )

    config = NightConfig(prompt=PromptConfig(ss_predictor=predictor))
    repo = s.fresh_repo(tmp_path / "repo")
    summary = run_night(s.inputs([4, 5]), repo, refcat=s.refcat, config=config, label="ss")
    assert {o.status for o in summary.outcomes} == {"alerted"}
    sky = Region(0.0, 0.0, 180.0)
    with open_l1db(L1DbConfig(path=repo.l1db_dir), readonly=True) as db:
        ds = db.dia_sources(sky, 1e6, days=1e6)
    attributed = ds[ds["ssObjectId"].notna()]
    # Every asteroid detection near a truth position is attributed.
    near = []
    for row in ds.itertuples():
        t = truth[truth["visit"] == row.visit]
        d = np.hypot((t["ra_deg"] - row.ra) * np.cos(np.deg2rad(row.dec)), t["dec_deg"] - row.dec)
        near.append(len(t) > 0 and d.min() * 3600 < 0.5)
    near = np.array(near)
    assert near.sum() >= 5
    assert ds["ssObjectId"].notna().to_numpy()[near].mean() >= 0.99
    assert attributed["diaObjectId"].isna().all()
    with open_archive(L1DbConfig(path=repo.l1db_dir)) as archive:
        for row in attributed.itertuples():
            packet = deserialize(archive.get(int(row.diaSourceId)).payload)  # type: ignore[union-attr]
            assert packet["ssSource"]["ssObjectId"] == row.ssObjectId
            assert packet["diaObject"] is None
