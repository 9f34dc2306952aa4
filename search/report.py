"""Search results on disk and on screen: CSV rows, the Pareto plot, the front as a table."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from supernet.checkpoint import atomic_write

from .objectives import DIRECTIONS, SearchConfigError, minimised, pareto_mask

# the first columns of evaluations.csv / pareto.csv (ARCHITECTURE.md), then any others, then iteration
LEADING = ("id", "arch", "accuracy", "macs", "params", "latency_ms", "latency_source")
TRAILING = ("iteration",)


def columns_of(rows: Sequence[dict]) -> list[str]:
    """Every key of ``rows``, in ARCHITECTURE.md's order."""
    present = dict.fromkeys(key for row in rows for key in row)
    columns = [c for c in LEADING if c in present]
    return columns + [c for c in present if c not in LEADING and c not in TRAILING] + [c for c in TRAILING
                                                                                        if c in present]


def write_rows(path: str | Path, rows: Sequence[dict], columns: Sequence[str] | None = None) -> Path:
    """Rows as CSV (``arch`` as JSON), written atomically; ``columns`` default to ``columns_of(rows)``."""
    columns = columns_of(rows) if columns is None else columns
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: json.dumps(value, separators=(",", ":")) if key == "arch" else value
                         for key, value in row.items()})
    return atomic_write(path, lambda f: f.write(text.getvalue()), mode="w")


def read_rows(path: str | Path) -> list[dict]:
    """The rows ``write_rows`` wrote: ``arch`` decoded, numbers as numbers, other text as text; a
    damaged row (cut short, a garbage line) raises ``SearchConfigError`` naming the file and line."""
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            if None in row or None in row.values():  # more or fewer fields than the header
                raise SearchConfigError(f"{path}: line {reader.line_num} has {len(row) - (None in row)} of "
                                        f"{len(reader.fieldnames)} columns: the file is damaged; move it away "
                                        "(or resume=never) to start this search over")
            try:
                rows.append({key: _parse(key, value) for key, value in row.items()})
            except ValueError as err:  # json.JSONDecodeError is one
                raise SearchConfigError(f"{path}: line {reader.line_num} is damaged ({err}); move the file away "
                                        "(or resume=never) to start this search over") from None
    return rows


def _parse(key: str, value: str):
    if key == "arch":
        return json.loads(value)
    for number in (int, float):
        try:
            return number(value)
        except ValueError:
            pass
    return value


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A plain-text table of ``rows`` (the front printed at the end of a search)."""
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    body = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in body)) if body else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)) for line in body]
    return "\n".join(lines)


def plot_pareto(path: str | Path, evaluations: Sequence[dict], pareto: Sequence[dict], x: str, y: str,
                title: str = "", constraints: dict[str, float] | None = None) -> Path:
    """``y`` against ``x`` for every real evaluation; the true front highlighted, the front known
    after each earlier iteration faded behind it; with ``constraints``, the evaluations that break
    one marked apart and the bounds on ``x`` and ``y`` drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def front(rows):
        F = np.stack([minimised(x, [r[x] for r in rows]), minimised(y, [r[y] for r in rows])], axis=1)
        return sorted((r for r, keep in zip(rows, pareto_mask(F), strict=True) if keep), key=lambda r: r[x])

    constraints = dict(constraints or {})

    def feasible(r):
        return all(DIRECTIONS[n] * (r[n] - bound) <= 0 for n, bound in constraints.items())

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    inside = [r for r in evaluations if feasible(r)]
    outside = [r for r in evaluations if not feasible(r)]
    ax.scatter([r[x] for r in inside], [r[y] for r in inside], s=12, c="0.7", label="real evaluations")
    if outside:
        ax.scatter([r[x] for r in outside], [r[y] for r in outside], s=14, c="0.55", marker="x", lw=0.8,
                   label=f"breaking a constraint ({len(outside)})")
    for name, bound in constraints.items():
        text = f"{name} {'<=' if DIRECTIONS[name] > 0 else '>='} {bound:g}"
        if name == x:
            ax.axvline(bound, c="tab:green", ls="--", lw=1, label=text)
        elif name == y:
            ax.axhline(bound, c="tab:green", ls="--", lw=1, label=text)
    iterations = sorted({r["iteration"] for r in evaluations})
    for i, it in enumerate(iterations[:-1]):
        earlier = [r for r in evaluations if r["iteration"] <= it]
        line = front(earlier)
        ax.step([r[x] for r in line], [r[y] for r in line], where="post", alpha=0.15 + 0.5 * i / len(iterations),
                c="tab:blue", lw=1, label="front after iteration" if i == 0 else None)
    if pareto:
        line = sorted(pareto, key=lambda r: r[x])
        ax.step([r[x] for r in line], [r[y] for r in line], where="post", c="tab:red", lw=1.5)
        ax.scatter([r[x] for r in line], [r[y] for r in line], s=28, c="tab:red", zorder=3, label="Pareto front")
    ax.set_xlabel(_label(x))
    ax.set_ylabel(_label(y))
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


def _label(name: str) -> str:
    return f"{name} ({'higher' if DIRECTIONS[name] < 0 else 'lower'} is better)"
