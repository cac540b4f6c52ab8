"""``faust-hpc simulate DIR``: write simulated FAUST data, truth and a demo run file."""
from __future__ import annotations

import argparse

from faust_hpc.simulate import DEFAULT_SEED, SIZES

HELP = "simulate FAUST-like 12m+7m data with a known sky (+ truth and a demo run file)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", help="output directory (data/, truth/, demo.toml)")
    parser.add_argument("--field", default="CB68", help="FAUST target (default: CB68)")
    parser.add_argument("--setup", type=int, default=2, help="FAUST Setup 1, 2 or 3 (default: 2)")
    parser.add_argument("--spws", default=None,
                        help="comma-separated SPW labels, e.g. 244.936GHz_CS,246.700GHz_cont "
                             "(default: the Setup's main line and its continuum window)")
    parser.add_argument("--size", choices=list(SIZES), default="small",
                        help="tiny: unit tests; small: the demo (default); medium: benchmarks")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="noise seed")


def parse_spw_list(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def run(args: argparse.Namespace) -> int:
    from faust_hpc.simulate import simulate

    result = simulate(args.directory, field=args.field, setup=args.setup, spws=parse_spw_list(args.spws),
                      size=args.size, seed=args.seed)
    for kind, ms in result.ms_paths.items():
        print(f"{kind:>3} MS: {ms}")
    for label, spw in result.truth["spws"].items():
        rms = spw["noise"]["image_rms_natural_jy_per_beam"]
        print(f"  {label}: {spw['nchan']} of the real {spw['catalog_nchan']} channels "
              f"({spw['chan_width_hz'] / 1e3:.3f} kHz), peak {spw['peak_jy_per_beam_nominal'] * 1e3:.1f} mJy/beam "
              f"at {spw['nominal_beam_arcsec']}\", natural rms {rms['joint'] * 1e3:.2f} mJy/beam (joint)")
    print(f"truth:  {result.truth_json}")
    print(f"run file: {result.runfile}  (faust-hpc run {result.runfile})")
    return 0
