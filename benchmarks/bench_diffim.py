"""Benchmark image subtraction: diaflow (Alard–Lupton + decorrelation) against properimage
(ZOGY) and SFFT (CPU backend, constant kernel), on the same pairs.

Two pairs:

* **synthetic** (2048^2; ``--quick``: 1024^2): one detector of the survey simulator, 8 nights of
  r-band pairs; the template is diaflow's coadd of the first 6 visits, warped onto a later
  visit; that visit is calibrated after ~1 point source per 64 x 64 px was injected into its raw
  pixels (photon noise included) at S/N 3-15. The reference image given to every code is that
  warped template (in the science exposure's counts), the science image the calibrated visit.
* **DECam** (256^2, ``../shared/realdata/decam``): the coadds of the OBS18 and OBS04 groups,
  calibrated against an internal catalog (see ``docs/subtraction.md``).

Each code runs in a fresh process (peers in ``.venv-peers``, ``make peers``): wall seconds of
its subtraction call and the process's peak memory. Every difference is then judged the same
way, with diaflow's detection and measurement: its photometric scale from the brightest injected
sources, its blank-sky noise over the variance plane that diaflow propagated (for a peer, the
plane of diaflow's own difference), then with the variance scaled to each image's own blank-sky
noise: false detections (5 sigma, away from all truth, see :func:`diaflow.sim.occupied_sky`),
completeness of the injected sources at S/N >= 7 and 5-6, and on DECam the transient's S/N.

Run it as ``diaflow bench diffim [--quick] [--json]`` or ``python benchmarks/bench_diffim.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, environment, measure_peak, median_seconds, run_fresh

PEERS = REPO / ".venv-peers" / "bin" / "python"
DECAM = REPO.parent / "shared" / "realdata" / "decam"


def _plain_fits(exposure: Any, path: Path) -> None:
    """Image and WCS only (what the peers read), with GAIN and SATURATE cards."""
    from astropy.io import fits

    header = exposure.wcs.to_header(relax=True)
    header["GAIN"] = exposure.info.gain
    header["SATURATE"] = exposure.info.saturation_e / max(exposure.info.gain, 1e-9)
    image = np.where(np.isfinite(exposure.image), exposure.image, 0.0).astype(np.float64)
    fits.PrimaryHDU(image, header).writeto(path, overwrite=True)


def _config(constant: bool) -> Any:
    from diaflow.diffim import KernelConfig, StampConfig, SubtractConfig

    config = SubtractConfig(stamps=StampConfig(min_snr=10.0, min_stamps=3))
    if constant:
        config = dataclasses.replace(
            config, kernel=KernelConfig(spatial_order=0, background_order=0)
        )
    return config


def child(ref: str, sci: str, constant: bool) -> None:
    """Run diaflow's subtraction on a stored pair; print seconds and peak memory as JSON."""
    from threadpoolctl import threadpool_limits

    from diaflow.diffim import subtract
    from diaflow.image import read_exposure

    template, science = read_exposure(ref), read_exposure(sci)
    config = _config(constant)
    with threadpool_limits(1):
        peak = measure_peak(lambda: subtract(science, template, config=config))
        seconds = median_seconds(lambda: subtract(science, template, config=config), 3)
    print(json.dumps({"peer": "diaflow", "seconds": seconds, "peak_mib": peak["peak_rss_mib"]}))


def _run_peer(peer: str, ref: Path, sci: Path, out: Path, convolve: str) -> dict[str, Any]:
    if not PEERS.exists():
        return {"peer": peer, "error": "no .venv-peers (run `make peers`)"}
    cmd = [str(PEERS), str(REPO / "benchmarks" / "peer_subtract.py"), peer, str(ref), str(sci)]
    cmd += [str(out)] + (["--convolve", convolve] if peer == "sfft" else [])
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=3600)
    if done.returncode != 0 or not out.exists():
        return {"peer": peer, "error": (done.stderr or done.stdout).strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _judge(
    name: str,
    image: np.ndarray,
    reference: Any,
    occupied: np.ndarray,
    fakes: Any | None,
    transient_xy: tuple[float, float] | None,
    transient_flux: float | None = None,
) -> dict[str, Any]:
    """Scale, noise, false detections, completeness: one difference judged like the others.

    The photometric scale of a difference comes from the injected sources, or, on DECam, from
    the transient's forced flux over its flux on diaflow's difference (``transient_flux``)."""
    from astropy.stats import mad_std

    from diaflow.measure import detect_and_measure, forced_photometry
    from diaflow.sim import blank_map

    diff = dataclasses.replace(reference, image=np.nan_to_num(image).astype(np.float32))
    ids = lambda n: np.arange(n, dtype=np.int64)  # noqa: E731
    wcs = diff.wcs
    scale = 1.0
    if fakes is not None:
        bright = fakes[fakes["snr"] >= 10]
        ra, dec = wcs.all_pix2world(bright["x"], bright["y"], 0)
        forced = forced_photometry(diff, ra, dec, ids=np.arange(len(bright)), make_ids=ids)
        scale = float(np.nanmedian(forced["psfFlux"].to_numpy() / bright["flux_njy"].to_numpy()))
    elif transient_xy is not None and transient_flux is not None:
        ra, dec = wcs.all_pix2world([transient_xy[0]], [transient_xy[1]], 0)
        forced = forced_photometry(diff, ra, dec, ids=[0], make_ids=ids)
        scale = float(forced["psfFlux"].iloc[0]) / transient_flux
    if np.isfinite(scale) and scale != 0:
        diff = dataclasses.replace(diff, image=(diff.image / np.float32(scale)))
    step = 4
    blank = blank_map(diff.shape, occupied, step) & (diff.mask[::step, ::step] == 0)
    z = diff.image[::step, ::step] / np.sqrt(diff.variance[::step, ::step])
    ratio = float(mad_std(z[blank & np.isfinite(z)]))
    own = dataclasses.replace(diff, variance=(diff.variance * ratio**2).astype(np.float32))
    found, _ = detect_and_measure(own, make_ids=ids)
    fx, fy = found["x"].to_numpy(), found["y"].to_numpy()
    near = np.zeros(len(found), dtype=bool)
    for x, y, r in occupied:
        near |= np.hypot(fx - x, fy - y) < r
    out: dict[str, Any] = {
        "flux_scale": scale,
        "noise_over_variance": ratio,
        "detections": len(found),
    }
    if fakes is not None:
        gx, gy = fakes["x"].to_numpy()[:, None], fakes["y"].to_numpy()[:, None]
        d = np.hypot(fx[None] - gx, fy[None] - gy)
        hit = (d < 2.0).any(axis=1) if len(found) else np.zeros(len(fakes), dtype=bool)
        near |= (d < 10.0).any(axis=0) if len(found) else near
        snr = fakes["snr"].to_numpy()
        out["completeness_snr7"] = float(hit[snr >= 7].mean())
        out["completeness_snr5_6"] = float(hit[(snr >= 5) & (snr < 6)].mean())
    if transient_xy is not None:
        ra, dec = wcs.all_pix2world([transient_xy[0]], [transient_xy[1]], 0)
        forced = forced_photometry(own, ra, dec, ids=[0], make_ids=ids)
        out["transient_flux"] = float(forced["psfFlux"].iloc[0])
        out["transient_snr"] = float(forced["psfFlux"].iloc[0] / forced["psfFluxErr"].iloc[0])
        near |= np.hypot(fx - transient_xy[0], fy - transient_xy[1]) < 5
    out["false_detections"] = int((~near).sum())
    return out


def _synthetic(tmp: Path, side: int) -> tuple[Path, Path, Any, np.ndarray, Any, str]:
    """The simulated pair: stored exposures, the fakes, the occupied sky, the conv. side."""
    import pandas as pd
    from scipy import ndimage

    from diaflow.calib import calibrate
    from diaflow.coadd import make_patch, warp_exposure
    from diaflow.coadd.psfmatch import psf_shape
    from diaflow.diffim import subtract
    from diaflow.image import read_exposure, write_exposure
    from diaflow.measure.fakes import inject_point_sources, point_stamp
    from diaflow.nightly import build_patch_template
    from diaflow.sim import occupied_sky, preset, simulate_survey
    from diaflow.sim.psf import true_visit_psf

    cfg = preset(
        "default",
        **{
            "seed": 99,
            "camera.n_detectors": 1,
            "camera.detector_shape": (side, side),
            "cadence.n_nights": 4,
            "cadence.visits_per_night": 2,
            "cadence.weather_loss_fraction": 0.0,
            "cadence.bands": ("r",),
            "sky.star_density_per_arcmin2": 12.0,
            "render.satellite_probability": 0.2,
        },
    )
    out = tmp / "survey"
    simulate_survey(cfg, out)
    visits = pd.read_parquet(out / "visits.parquet")
    refcat = pd.read_parquet(out / "refcat.parquet")
    first, row = visits.iloc[:6], visits.iloc[6]
    patch = make_patch(
        ra_deg=float(row["boresight_ra_deg"]),
        dec_deg=float(row["boresight_dec_deg"]),
        size_arcsec=side * 0.2 * 1.5,
        pixel_scale_arcsec=0.2,
        name="bench",
    )
    template = build_patch_template(
        [read_exposure(out / p) for p in first["path"]], refcat=refcat, patch=patch, band="r"
    )
    raw = read_exposure(out / row["path"])
    clean = calibrate(raw, refcat).exposure
    warped = warp_exposure(template.exposure, clean.wcs, clean.shape)
    to_counts = 10 ** (-0.4 * (31.4 - float(clean.zero_point)))
    rng = np.random.default_rng(5)
    grid = np.arange(40, side - 40, 64.0)
    gx, gy = np.meshgrid(grid, grid)
    xy = np.c_[gx.ravel(), gy.ravel()] + rng.uniform(-8, 8, (gx.size, 2))
    occupied = occupied_sky(out, cfg, int(row["visit"]), clean.wcs, template_visits=first["visit"])
    far = np.ones(len(xy), dtype=bool)
    for x, y, r in occupied:
        far &= np.hypot(xy[:, 0] - x, xy[:, 1] - y) >= r + 5
    reference = dataclasses.replace(
        warped,
        image=(warped.image * np.float32(to_counts)),
        variance=(warped.variance * np.float32(to_counts**2)),
        zero_point=clean.zero_point,
        info=dataclasses.replace(warped.info, gain=clean.info.gain),
    )
    # Sources go where the clean difference is unmasked, with the S/N its PSF-flux error gives.
    cd = subtract(clean, reference, config=_config(False)).difference
    ix, iy = xy[:, 0].round().astype(int), xy[:, 1].round().astype(int)
    far &= ~ndimage.maximum_filter(cd.mask != 0, size=9)[iy, ix]
    xy = xy[far]
    err = []
    for x, y in xy:
        stamp = point_stamp(cd.psf, x, y)
        h = stamp.shape[0] // 2
        v = cd.variance[round(y) - h : round(y) + h + 1, round(x) - h : round(x) + h + 1]
        err.append(1.0 / math.sqrt(float(np.sum(stamp**2 / v))))
    snr = rng.uniform(3.0, 15.0, len(xy))
    counts = snr * np.array(err)
    psf = true_visit_psf(row, cfg)
    science = calibrate(inject_point_sources(raw, psf, xy, counts, rng=rng), refcat).exposure
    fakes = pd.DataFrame(
        {
            "x": xy[:, 0],
            "y": xy[:, 1],
            "snr": snr,
            "flux_njy": counts * 10 ** (0.4 * (31.4 - float(science.zero_point))),
        }
    )
    ref_path, sci_path = tmp / "ref.fits", tmp / "sci.fits"
    write_exposure(reference, ref_path, overwrite=True)
    write_exposure(science, sci_path, overwrite=True)
    t_fwhm = psf_shape(np.asarray(reference.psf.kernel(side / 2, side / 2)))[0]
    s_fwhm = psf_shape(np.asarray(science.psf.kernel(side / 2, side / 2)))[0]
    return ref_path, sci_path, fakes, occupied, science, "REF" if t_fwhm <= s_fwhm else "SCI"


def _decam(tmp: Path) -> tuple[Path, Path, np.ndarray, str]:
    from diaflow.calib import CalibConfig, PsfConfig, calibrate, internal_refcat
    from diaflow.coadd import TemplateConfig, build_template
    from diaflow.image import read_single_image, write_exposure

    paths = sorted((DECAM / "input_data").glob("DEC-OBS*.mini.fits"))
    raw = {p.name.split(".")[0][-3:]: read_single_image(p) for p in paths}
    ref = raw["18a"]
    refcat = internal_refcat(ref, zero_point=30.0)
    config = CalibConfig(psf=PsfConfig(order=0, min_stars=3))
    cal = {k: calibrate(e, refcat, config=config).exposure for k, e in raw.items()}
    stacks = {}
    for group in ("18", "04"):
        stacks[group] = build_template(
            [cal[k] for k in cal if k.startswith(group)],
            target_wcs=ref.wcs,
            target_shape=ref.shape,
            config=TemplateConfig(min_visits=3),
            band="i",
        ).exposure
    stacks = {
        g: dataclasses.replace(e, info=dataclasses.replace(e.info, visit=1 + i, detector=0))
        for i, (g, e) in enumerate(stacks.items())
    }
    bright = refcat.sort_values("i_flux", ascending=False).head(6)
    sx, sy = ref.wcs.all_world2pix(bright["ra"], bright["dec"], 0)
    occupied = np.c_[sx, sy, np.full(len(sx), 15.0)]
    ref_path, sci_path = tmp / "decam_ref.fits", tmp / "decam_sci.fits"
    write_exposure(stacks["18"], ref_path, overwrite=True)
    write_exposure(stacks["04"], sci_path, overwrite=True)
    return ref_path, sci_path, occupied, "REF"


def _compare(
    tmp: Path,
    label: str,
    ref_path: Path,
    sci_path: Path,
    occupied: np.ndarray,
    fakes: Any | None,
    convolve: str,
    constant: bool,
    transient_xy: tuple[float, float] | None = None,
) -> dict[str, Any]:
    from astropy.io import fits

    from diaflow.diffim import subtract
    from diaflow.image import read_exposure

    argv = [__file__, "--child", str(ref_path), str(sci_path)]
    runs = {"diaflow": run_fresh(argv + (["--constant"] if constant else []))}
    ours = subtract(read_exposure(sci_path), read_exposure(ref_path), config=_config(constant))
    ours = ours.difference
    ref_plain, sci_plain = tmp / f"{label}_ref_plain.fits", tmp / f"{label}_sci_plain.fits"
    _plain_fits(read_exposure(ref_path), ref_plain)
    _plain_fits(read_exposure(sci_path), sci_plain)
    images = {}
    for peer in ("properimage", "sfft"):
        out = tmp / f"{label}_{peer}.fits"
        runs[peer] = _run_peer(peer, ref_plain, sci_plain, out, convolve)
        if "error" not in runs[peer]:
            images[peer] = np.asarray(fits.getdata(out), dtype=np.float64)
    images = {"diaflow": ours.image, **images}
    result: dict[str, Any] = {}
    flux = None
    for name, run in runs.items():
        row = {k: v for k, v in run.items() if k != "peer"}
        if name in images:
            row.update(_judge(name, images[name], ours, occupied, fakes, transient_xy, flux))
            flux = row.get("transient_flux", flux)
        result[name] = row
    return result


def _flat(prefix: str, value: Any, out: dict[str, object]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def run(quick: bool = False) -> dict[str, object]:
    side = 1024 if quick else 2048
    figures: dict[str, object] = {"bench": "diffim", "synthetic_px": side}
    with tempfile.TemporaryDirectory(prefix="diaflow-bench-diffim-") as name:
        tmp = Path(name)
        ref, sci, fakes, occupied, _, convolve = _synthetic(tmp, side)
        figures["synthetic_fakes"] = len(fakes)
        figures["synthetic_convolved"] = convolve
        figures["synthetic"] = _compare(tmp, "syn", ref, sci, occupied, fakes, convolve, False)
        if DECAM.exists():
            dref, dsci, docc, dconv = _decam(tmp)
            figures["decam"] = _compare(
                tmp, "decam", dref, dsci, docc, None, dconv, True, transient_xy=(128.1, 127.6)
            )
    flat: dict[str, object] = {}
    _flat("", figures, flat)
    flat.update(environment())
    return flat


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("REF", "SCI"))
    parser.add_argument("--constant", action="store_true")
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child, constant=args.constant)
        return
    figures = run(quick=args.quick)
    print(json.dumps(figures, indent=None if args.json else 2, default=float))


if __name__ == "__main__":
    main()
