"""``python -m search.pick SEARCH_DIR latency_ms=5 [accuracy=0.8 ...] [--by accuracy] [--no-export]``

The most accurate (or best ``--by``) evaluated subnet of a finished or running search within the
bounds (an upper bound for a minimised quantity, a lower bound for accuracy), its figures and where
its export is; exports it to ``SEARCH_DIR/subnets/<id>/`` first when the search did not (the
supernet named in ``search_state.json``, ``--no-onnx`` to skip ONNX). In Python:
``result.best({"latency_ms": 5})`` or ``best_row(rows, {"latency_ms": 5})``.

A bound that no evaluated subnet meets is a one-line error naming the nearest ones.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .objectives import DIRECTIONS, SearchConfigError, check_constraints, violation
from .report import read_rows


def best_row(rows: Sequence[dict], constraints: Mapping[str, float], by: str = "accuracy") -> dict:
    """The row with the best ``by`` among those within ``constraints``; ties go to the earlier row."""
    constraints = check_constraints(constraints)
    if by not in DIRECTIONS:
        raise SearchConfigError(f"unknown quantity by={by!r}; allowed: {', '.join(DIRECTIONS)}")
    if not rows:
        raise SearchConfigError("the search has no evaluated subnet yet")
    for name in [*constraints, by]:
        if name not in rows[0]:
            present = [n for n in DIRECTIONS if n in rows[0]]
            raise SearchConfigError(f"the evaluations have no {name!r}; they have: {', '.join(present)}")
    G = violation(constraints, {name: np.array([row[name] for row in rows], dtype=np.float64)
                                for name in constraints})
    inside = np.flatnonzero((G <= 0).all(axis=1)) if constraints else np.arange(len(rows))
    if not inside.size:
        relative = np.clip(G, 0, None) / np.maximum(np.abs(list(constraints.values())), 1e-12)
        nearest = np.argsort(relative.sum(axis=1), kind="stable")[:3]
        shown = "; ".join(f"id {rows[i]['id']} (" + ", ".join(f"{n}={rows[i][n]:.4g}" for n in
                                                           dict.fromkeys([*constraints, by])) + ")"
                          for i in nearest)
        raise SearchConfigError(f"no evaluated subnet meets {describe(constraints)} "
                                f"({len(rows)} evaluated); nearest: {shown}")
    values = DIRECTIONS[by] * np.array([rows[i][by] for i in inside], dtype=np.float64)
    return rows[int(inside[int(np.argmin(values))])]


def describe(constraints: Mapping[str, float]) -> str:
    return ", ".join(f"{n}{'<=' if DIRECTIONS[n] > 0 else '>='}{b:g}" for n, b in constraints.items())


def parse_bound(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep:
        raise SearchConfigError(f"bound {text!r}: write NAME=VALUE, e.g. latency_ms=5; names: {', '.join(DIRECTIONS)}")
    try:
        return name, float(value)
    except ValueError:
        raise SearchConfigError(f"bound {text!r}: {value!r} is not a number") from None


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m search.pick", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("search_dir", help="a search directory (runs/search/<hw>/<stamp>)")
    parser.add_argument("bounds", nargs="*", help="NAME=VALUE bounds, e.g. latency_ms=5 accuracy=0.9")
    parser.add_argument("--by", default="accuracy", help="the quantity to make best (default: accuracy)")
    parser.add_argument("--no-export", action="store_true", help="only print, do not export")
    parser.add_argument("--no-onnx", action="store_true", help="export without model.onnx")
    args = parser.parse_args(argv)
    try:
        out = Path(args.search_dir)
        if not (out / "evaluations.csv").is_file():
            raise SearchConfigError(f"{str(out)!r} is not a search directory (no evaluations.csv)")
        row = best_row(read_rows(out / "evaluations.csv"), dict(parse_bound(b) for b in args.bounds), args.by)
        export = out / "subnets" / f"{row['id']:04d}"
        figures = ", ".join(f"{n}={row[n]:.6g}" for n in DIRECTIONS if isinstance(row.get(n), (int, float)))
        print(f"subnet {row['id']}: {figures}" + (f" ({describe(dict(map(parse_bound, args.bounds)))})"
                                                  if args.bounds else ""))
        print(f"arch: {json.dumps(row['arch'], separators=(',', ':'))}")
        if not (export / "arch.json").is_file() and not args.no_export:
            export_row(out, row, export, onnx=not args.no_onnx)
            print(f"exported: {export}/")
        elif (export / "arch.json").is_file():
            onnx = ", model.onnx" if (export / "model.onnx").is_file() else ""
            print(f"export: {export}/ (arch.json, model.pt, model.pt2{onnx})")
        else:
            print(f"not exported (--no-export); without it: {export}/")
    except (SearchConfigError, OSError, ValueError) as error:
        sys.exit(f"error: {error}")
    return export


def export_row(out: Path, row: dict, export: Path, onnx: bool) -> None:
    """Exports the row's subnet from the supernet the search ran on."""
    from supernet.checkpoint import load_supernet
    from supernet.export import save_subnet

    state_path = out / "search_state.json"
    supernet = json.loads(state_path.read_text())["settings"].get("supernet") if state_path.is_file() else None
    if not supernet:
        raise SearchConfigError(f"{state_path} does not name the supernet to export from; use --no-export")
    net = load_supernet(supernet)
    metrics = {key: row[key] for key in ("accuracy", "macs", "params", "latency_ms", "latency_source", "profile")
               if key in row}
    save_subnet(net, row["arch"], export, metrics=metrics, supernet_path=supernet, onnx=onnx)


if __name__ == "__main__":
    main()
