"""Run a peer image-subtraction code on a FITS pair; runs inside the peers' environment.

    .venv-peers/bin/python benchmarks/peer_subtract.py {properimage,sfft} REF.fits SCI.fits OUT.fits

Writes the difference image to OUT.fits and prints one JSON object: wall seconds of the peer's
call and the process's peak resident memory (MiB). diaflow itself is not imported here: the
peers live in their own environment (``make peers``) so that they never become its dependencies.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
from astropy.io import fits


def _peak_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_properimage(ref: Path, sci: Path, out: Path) -> None:
    from properimage.operations import subtract

    result = subtract(
        ref=str(ref),
        new=str(sci),
        smooth_psf=False,
        fitted_psf=True,
        align=False,
        iterative=False,
        beta=True,
        shift=True,
    )
    diff = np.real(np.asarray(result[0]))
    fits.PrimaryHDU(diff.astype(np.float32)).writeto(out, overwrite=True)


def run_sfft(
    ref: Path, sci: Path, out: Path, kernel_order: int, background_order: int, convolve: str
) -> None:
    from sfft.CustomizedPacket import Customized_Packet

    # SFFT's customised packet takes the pixels to fit from "masked" copies of the images: keep
    # everything except non-finite and saturated pixels (its crowded-field mode does the same).
    masked = []
    for path in (ref, sci):
        with fits.open(path) as hdul:
            data = np.asarray(hdul[0].data, dtype=np.float64)
            sat = float(hdul[0].header.get("SATURATE", np.inf))
        bad = ~np.isfinite(data) | (data >= sat)
        mpath = out.with_name(path.stem + ".masked.fits")
        fits.PrimaryHDU(np.where(bad, 0.0, data), fits.getheader(path)).writeto(
            mpath, overwrite=True
        )
        masked.append(mpath)
    Customized_Packet.CP(
        FITS_REF=str(ref),
        FITS_SCI=str(sci),
        FITS_mREF=str(masked[0]),
        FITS_mSCI=str(masked[1]),
        ForceConv=convolve,
        GKerHW=8,
        FITS_DIFF=str(out),
        KerPolyOrder=kernel_order,
        BGPolyOrder=background_order,
        ConstPhotRatio=True,
        BACKEND_4SUBTRACT="Numpy",
        NUM_CPU_THREADS_4SUBTRACT=1,
        VERBOSE_LEVEL=0,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peer", choices=["properimage", "sfft"])
    parser.add_argument("ref", type=Path)
    parser.add_argument("sci", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--kernel-order",
        type=int,
        default=0,
        help="SFFT spatial kernel order (0: constant; 2 needs 12-19 GB at 2048^2)",
    )
    parser.add_argument("--background-order", type=int, default=0)
    parser.add_argument(
        "--convolve",
        choices=["REF", "SCI"],
        default="REF",
        help="SFFT: which image to convolve (the one with the narrower PSF)",
    )
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if args.peer == "properimage":
        run_properimage(args.ref, args.sci, args.out)
    else:
        run_sfft(
            args.ref, args.sci, args.out, args.kernel_order, args.background_order, args.convolve
        )
    seconds = time.perf_counter() - t0
    print(json.dumps({"peer": args.peer, "seconds": seconds, "peak_mib": _peak_mib()}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
