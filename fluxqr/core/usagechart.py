"""A PNG chart of QPU usage over time per device, for an admin's report (matplotlib).

matplotlib is the ``report`` extra; it is imported only when a chart is drawn.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fluxqr.errors import FluxqrError, MissingExtraError

WIDTH_IN, HEIGHT_IN, DPI = 10.0, 5.0, 100  # 1000 x 500 pixels


def _start(row: Mapping[str, Any]) -> float | None:
    for key in ("activated", "opened", "t_run", "t_submit"):
        if row.get(key) is not None:
            return float(row[key])
    return None


def bins(rows: Sequence[Mapping[str, Any]], since: float | None, until: float | None
         ) -> tuple[float, list[float], dict[str, list[float]]]:
    """Charged seconds per device per time bin (a row counts in the bin its use began).

    Bins are hours for a window of two days or less, days otherwise. Returns the bin size,
    the bin starts (epoch seconds) and ``{device: [seconds per bin]}``.
    """
    starts = [s for s in (_start(r) for r in rows) if s is not None]
    lo = since if since is not None else (min(starts) if starts else 0.0)
    hi = until if until is not None else (max(starts) if starts else lo)
    size = 3600.0 if hi - lo <= 2 * 86400 else 86400.0
    # align to whole local hours/days so the labels read naturally
    first = _dt.datetime.fromtimestamp(lo)
    first = first.replace(minute=0, second=0, microsecond=0)
    if size == 86400.0:
        first = first.replace(hour=0)
    origin = first.timestamp()
    count = max(1, int((hi - origin) // size) + 1)
    edges = [origin + i * size for i in range(count)]
    series: dict[str, list[float]] = defaultdict(lambda: [0.0] * count)
    for row in rows:
        start = _start(row)
        if start is None:
            continue
        i = min(count - 1, max(0, int((start - origin) // size)))
        series[str(row["device"])][i] += float(row["seconds"] or 0.0)
    return size, edges, dict(sorted(series.items()))


def write_chart(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]],
                since: float | None = None, until: float | None = None,
                title: str = "QPU usage per device") -> None:
    """Stacked bars of charged QPU seconds per device over time, as a PNG at ``path``."""
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError("matplotlib", "report") from None
    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    size, edges, series = bins(rows, since, until)
    x = [_dt.datetime.fromtimestamp(e) for e in edges]
    width = size / 86400.0 * 0.8  # matplotlib date units are days
    fig, ax = plt.subplots(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    try:
        bottom = [0.0] * len(edges)
        for device, values in series.items():
            ax.bar(x, values, width=width, bottom=bottom, label=device, align="edge")
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        if not series:
            ax.text(0.5, 0.5, "no usage in this window", transform=ax.transAxes,
                    ha="center", va="center")
        ax.set_ylabel("QPU seconds (vendor-reported, else session wall time)")
        ax.set_title(title)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M" if size < 86400
                                                          else "%Y-%m-%d"))
        fig.autofmt_xdate()
        if series:
            ax.legend(title="device", loc="upper left", fontsize="small")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    _write_atomically(Path(path), buf.getvalue())


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the whole new one, never half a PNG."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    except OSError as exc:
        raise FluxqrError(f"cannot write the chart to {path}: {exc.strerror or exc}",
                          fix="choose a writable path") from None
    try:
        with os.fdopen(fd, "wb") as fp:
            fp.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise FluxqrError(f"cannot write the chart to {path}: {exc.strerror or exc}",
                          fix="choose a writable path") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
