"""``python -m search.measure --calibrate PROFILE TABLE``: fit a roofline profile to a device table.

    python -m search.measure --calibrate jetson runs/tables/jetson.csv --supernet runs/train/vit-digits/supernet.pt \\
        [--out runs/tables/jetson_calibrated.yaml] [--name jetson_calibrated]
    python -m search.measure --calibrate my_gpu.yaml help_2080ti_1.csv --space ofa_mbv3_w12

PROFILE is an estimated profile (name or YAML path), TABLE a device table (``arch``, ``latency_ms``)
measured at the profile's batch size. The archs' cost records come from ``--supernet`` (a trained
supernet.pt) or ``--space`` (a named space: ``ofa_mbv3_w12``, OFA's MobileNetV3 w1.2 at 128-224 px).
Writes the calibrated profile, a YAML that records what it was fitted on and its fit error; use it
like any other (``load_profile(PATH)``). The fit itself is ``hw_profiles.calibrate``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hw_profiles import ProfileError, load_profile, read_table
from hw_profiles.calibrate import calibrate, calibrated_fields, write_profile
from supernet.space import ArchError

SPACES = ("ofa_mbv3_w12",)


def named_space(name: str):
    if name not in SPACES:
        raise ValueError(f"unknown space {name!r}; known spaces: {', '.join(SPACES)} (or pass --supernet PATH)")
    from supernet.models.mobilenetv3 import OFA_RESOLUTIONS

    from .benchmarks import ofa_w12_space
    return ofa_w12_space(OFA_RESOLUTIONS)


def table_costs(space, rows) -> list[list[dict]]:
    costs = []
    for row in rows:
        try:
            costs.append(space.layer_costs(row.arch))
        except ArchError as err:
            raise ValueError(f"table line {row.line}: arch not in the space: {err}") from None
    return costs


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m search.measure --calibrate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibrate", nargs=2, metavar=("PROFILE", "TABLE"), required=True,
                        help="an estimated profile (name or YAML) and a device table CSV measured on the device")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--supernet", help="a trained supernet.pt whose space the table's archs belong to")
    source.add_argument("--space", help=f"a named space instead: {', '.join(SPACES)}")
    parser.add_argument("--out", help="output YAML (default: next to TABLE, <profile>_calibrated.yaml)")
    parser.add_argument("--name", help="name of the calibrated profile (default: <profile>_calibrated)")
    args = parser.parse_args(argv)
    profile_name, table = args.calibrate
    try:
        profile = load_profile(profile_name)
        rows = read_table(Path(table))
        if args.supernet is not None:
            from supernet.checkpoint import CheckpointError, load_supernet
            try:
                space = load_supernet(args.supernet).space
            except CheckpointError as err:
                raise ValueError(str(err)) from None
        else:
            space = named_space(args.space)
        result = calibrate(profile, table_costs(space, rows), [row.latency_ms for row in rows])
    except (ProfileError, ValueError) as err:
        sys.exit(f"error: {err}")
    fields = calibrated_fields(profile, result, table=str(table), space=args.supernet or args.space, name=args.name)
    out = Path(args.out) if args.out else Path(table).with_name(f"{fields['name']}.yaml")
    try:
        write_profile(fields, out)
    except ProfileError as err:  # a full disk
        sys.exit(f"error: {err}")
    print(f"calibrated {profile.name} on {result.rows} subnets of {table}: MAPE {result.before_mape:.2f}% -> "
          f"{result.fit_mape:.2f}%, Kendall tau {result.before_kendall_tau:.3f} -> {result.fit_kendall_tau:.3f}; "
          f"launch overhead {result.launch_overhead_ms * 1e3:.1f} us/layer")
    print(f"wrote {out} (a profile: load_profile({str(out)!r}))")
    return out


if __name__ == "__main__":
    main()
