"""The run report: what ran where and when, and what it cost, from the manifest.

The manifest (``<product_dir>/.faust-hpc/manifest.jsonl``, written by the
launcher) is the only input, so a report can be made at any time: during a
run, after a crash, after a resume. Each unit attempt is the pair of its
``started`` record and the ``done`` / ``failed`` / ``interrupted`` record
that ended it (an attempt with no end yet is *running*).

Outputs, in ``<product_dir>/report/`` by default:

- ``timeline.png``: one row per worker rank (more lanes when a rank ran units
  side by side), time across; bars coloured by SPW, hatched by kind (prepare
  ``//``, chunk plain, moments ``..``, QA ``xx``), each SPW's finalize with a
  thick black outline and its label; failed attempts outlined in red with a
  red cross, interrupted ones in orange, retries tagged ``rN``;
- ``report.md`` and ``report.html``: per SPW image the status, units done,
  wall time (first start to last end), CPU-hours (attempt durations x the
  unit's thread budget), attempts and failures, links to the products of its
  done units and to the CASA logs (all failed attempts, and the finalize).
"""
from __future__ import annotations

import html
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from faust_hpc.errors import UserInputError
from faust_hpc.layout import RunLayout
from faust_hpc.run.manifest import Manifest
from faust_hpc.run.records import END_EVENTS, UnitEvent, UnitRecord, UnitStatus
from faust_hpc.run.view import fmt_duration
from faust_hpc.units import UNIT_KINDS, ImageKey, kind_of_id

log = logging.getLogger(__name__)

KIND_ORDER = UNIT_KINDS
KIND_HATCH = {"prepare": "////", "chunk": "", "beam": "\\\\", "post": "||", "concat": "--", "finalize": "",
              "moments": "....", "qa": "xxxx"}
unit_kind = kind_of_id


@dataclass
class Attempt:
    """One try of one unit on one rank."""

    unit: str
    attempt: int
    rank: int
    host: str
    start: float
    end: float | None = None
    status: str = UnitStatus.RUNNING
    error: str | None = None
    outputs: list[str] = field(default_factory=list)
    threads: int = 1
    log: str | None = None

    @property
    def kind(self) -> str:
        return unit_kind(self.unit)

    @property
    def key(self) -> str:
        try:
            return ImageKey.from_unit_id(self.unit).path
        except ValueError:
            return self.unit.rsplit("/", 1)[0]

    @property
    def label(self) -> str:
        parts = self.unit.split("/")
        return parts[1] if len(parts) > 1 else self.unit

    def duration(self, now: float) -> float:
        return max(0.0, (self.end if self.end is not None else now) - self.start)


_ATTEMPT_EVENTS = frozenset((UnitEvent.STARTED.value, *END_EVENTS))


def attempts_from_records(records: Iterable[dict]) -> list[Attempt]:
    """Pair ``started`` with the record that ended the same (unit, attempt)."""
    open_: dict[tuple[str, int], Attempt] = {}
    out: list[Attempt] = []
    for raw in records:
        if not raw.get("unit") or raw.get("event") not in _ATTEMPT_EVENTS:
            continue
        rec = UnitRecord.from_json(raw)
        uid, key = rec.unit, (rec.unit, int(rec.attempt or 0))
        t = float(rec.time or 0.0)
        if rec.event == UnitEvent.STARTED:
            att = Attempt(uid, key[1], int(rec.rank or 0), str(rec.host or "?"), t,
                          threads=max(1, int(rec.threads or 1)), log=rec.log)
            open_[key] = att
            out.append(att)
            continue
        att = open_.pop(key, None)
        if att is None:
            # An end with no start seen (e.g. a resume marking a stale unit): a zero-length mark.
            att = Attempt(uid, key[1], int(rec.rank or 0), str(rec.host or "?"), t)
            out.append(att)
        att.end, att.status, att.error = t, UnitStatus(rec.event), rec.error
        att.outputs = [str(p) for p in rec.outputs or []]
    return out


@dataclass
class SpwSummary:
    key: str
    units: set[str] = field(default_factory=set)
    done_units: set[str] = field(default_factory=set)
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(a.status == UnitStatus.FAILED for a in self.attempts)

    @property
    def failed_units(self) -> set[str]:
        return {a.unit for a in self.attempts if a.status == UnitStatus.FAILED} - self.done_units

    def status(self) -> str:
        if self.failed_units and not any(a.status == UnitStatus.RUNNING for a in self.attempts):
            last = {}
            for a in self.attempts:
                last[a.unit] = a
            if any(last[u].status == UnitStatus.FAILED for u in self.failed_units):
                return UnitStatus.FAILED
        if any(a.status == UnitStatus.RUNNING for a in self.attempts):
            return UnitStatus.RUNNING
        finals = {u for u in self.units if unit_kind(u) == "finalize"}
        if finals and finals <= self.done_units and self.done_units == self.units:
            return UnitStatus.DONE
        return "incomplete"

    @property
    def pending_units(self) -> set[str]:
        return self.units - {a.unit for a in self.attempts}

    def wall_s(self, now: float) -> float:
        starts = [a.start for a in self.attempts]
        ends = [a.end if a.end is not None else now for a in self.attempts]
        return max(ends) - min(starts) if starts else 0.0

    def cpu_hours(self, now: float) -> float:
        return sum(a.duration(now) * a.threads for a in self.attempts) / 3600.0


def summarize(attempts: list[Attempt], expected_units: Iterable[str] = ()) -> dict[str, SpwSummary]:
    """Per image key; ``expected_units`` (the plan's unit ids) adds the units
    that never started, so a failed SPW shows what it is missing."""
    by_key: dict[str, SpwSummary] = {}
    for uid in expected_units:
        key = uid.rsplit("/", 1)[0]
        by_key.setdefault(key, SpwSummary(key)).units.add(uid)
    for a in attempts:
        s = by_key.setdefault(a.key, SpwSummary(a.key))
        s.units.add(a.unit)
        s.attempts.append(a)
        if a.status == UnitStatus.DONE:
            s.done_units.add(a.unit)
    return dict(sorted(by_key.items()))


# ----------------------------------------------------------------------------- timeline
def _lanes(attempts: list[Attempt], now: float) -> tuple[list[tuple[str, int, int]], dict[int, int]]:
    """Rows of the timeline: per (host, rank), as many lanes as it ran units at once."""
    rows: list[tuple[str, int, int]] = []
    lane_of: dict[int, int] = {}
    by_worker: dict[tuple[str, int], list[tuple[int, Attempt]]] = defaultdict(list)
    for i, a in enumerate(attempts):
        by_worker[(a.host, a.rank)].append((i, a))
    for worker in sorted(by_worker, key=lambda w: (w[1], w[0])):
        lane_ends: list[float] = []
        first_row = len(rows)
        for i, a in sorted(by_worker[worker], key=lambda p: (p[1].start, p[1].unit)):
            end = a.end if a.end is not None else now
            for lane, lane_end in enumerate(lane_ends):
                if lane_end <= a.start + 1e-9:
                    lane_ends[lane] = end
                    break
            else:
                lane_ends.append(end)
                lane = len(lane_ends) - 1
                rows.append((worker[0], worker[1], lane))
            lane_of[i] = first_row + lane
    return rows, lane_of


def render_timeline(attempts: list[Attempt], out_png: Path, title: str = "", now: float | None = None) -> Path:
    """Draw the timeline PNG (Agg backend), written atomically."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if now is None:
        running = any(a.end is None for a in attempts)
        now = time.time() if running else max((a.end or a.start for a in attempts), default=0.0)
    t0 = min((a.start for a in attempts), default=now)
    span = max(now - t0, 1e-3)
    scale, unit = (60.0, "min") if span > 600 else (1.0, "s")
    rows, lane_of = _lanes(attempts, now)
    keys = sorted({a.key for a in attempts})
    cmap = plt.get_cmap("tab10" if len(keys) <= 10 else "tab20")
    color = {k: cmap(i % cmap.N) for i, k in enumerate(keys)}
    height = 1.6 + 0.38 * max(len(rows), 1) + 0.18 * len(keys)
    fig, ax = plt.subplots(figsize=(12, height))
    for i, a in enumerate(attempts):
        y = lane_of[i]
        x0 = (a.start - t0) / scale
        width = max(a.duration(now) / scale, span / scale * 0.002)
        edge, lw, ls = "0.25", 0.5, "solid"
        if a.kind == "finalize":
            edge, lw = "black", 2.2
        if a.status == UnitStatus.FAILED:
            edge, lw = "red", 2.0
        elif a.status == UnitStatus.INTERRUPTED:
            edge, lw = "darkorange", 2.0
        elif a.status == UnitStatus.RUNNING:
            ls = "dashed"
        ax.barh(y, width, left=x0, height=0.72, color=color[a.key], alpha=0.9 if a.kind != "prepare" else 0.6,
                edgecolor=edge, linewidth=lw, linestyle=ls, hatch=KIND_HATCH.get(a.kind, ""))
        xe = x0 + width
        if a.status == UnitStatus.FAILED:
            ax.plot([xe], [y], marker="x", color="red", markersize=9, mew=2.2, zorder=5)
        elif a.status == UnitStatus.INTERRUPTED:
            ax.plot([xe], [y], marker="s", color="darkorange", markersize=5, zorder=5)
        if a.attempt > 1:
            ax.annotate(f"r{a.attempt}", (x0, y - 0.36), xytext=(2, -1), textcoords="offset points",
                        fontsize=7, color="purple", va="top", fontweight="bold")
        if a.kind == "finalize":
            ax.annotate(f"finalize {a.label}", (x0 + width / 2, y), fontsize=6, ha="center", va="center",
                        color="black", fontweight="bold",
                        bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.7))
    # Each SPW's finalize end as a dotted line: the moment its cube exists.
    for a in attempts:
        if a.kind == "finalize" and a.status == UnitStatus.DONE and a.end is not None:
            ax.axvline((a.end - t0) / scale, color=color[a.key], linestyle=":", linewidth=1.0)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"rank {r} @{h}" + (f" [{lane + 1}]" if lane else "") for h, r, lane in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"time since run start ({unit})")
    ax.set_xlim(0, span / scale * 1.02)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=9)
    handles = [Patch(facecolor=color[k], edgecolor="0.25", label=k) for k in keys]
    handles += [Patch(facecolor="white", edgecolor="0.25", hatch=KIND_HATCH[k] or None, label=k)
                for k in KIND_ORDER if k != "finalize"]
    handles += [Patch(facecolor="white", edgecolor="black", linewidth=2.2, label="finalize"),
                Line2D([], [], marker="x", color="red", linestyle="none", mew=2, label="failed attempt"),
                Line2D([], [], marker="s", color="darkorange", linestyle="none", label="interrupted"),
                Line2D([], [], marker="$rN$", color="purple", linestyle="none", markersize=12, label="retry N"),
                Line2D([], [], color="0.3", linestyle=":", label="SPW finalized")]
    ax.legend(handles=handles, fontsize=6, loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".tmp-{os.getpid()}-{out_png.name}")
    fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
    os.replace(tmp, out_png)
    return out_png


# ----------------------------------------------------------------------------- tables
@dataclass
class Link:
    text: str
    target: str       # relative to the report directory
    exists: bool


def _rel(path: str | os.PathLike, product_dir: Path, report_dir: Path) -> tuple[str, bool]:
    p = Path(path)
    if not p.is_absolute():
        p = product_dir / p
    return os.path.relpath(p, report_dir), p.exists()


def _links(summary: SpwSummary, product_dir: Path, report_dir: Path) -> tuple[list[Link], list[Link]]:
    products: list[Link] = []
    last_done: dict[str, Attempt] = {}
    for a in summary.attempts:
        if a.status == UnitStatus.DONE:
            last_done[a.unit] = a
    for uid in sorted(last_done, key=lambda u: (KIND_ORDER.index(unit_kind(u)) if unit_kind(u) in KIND_ORDER
                                              else 9, u)):
        if unit_kind(uid) in ("finalize", "moments", "qa"):
            for out in last_done[uid].outputs:
                target, exists = _rel(out, product_dir, report_dir)
                products.append(Link(Path(out).name, target, exists))
    logs: list[Link] = []
    for a in summary.attempts:
        if a.status in (UnitStatus.FAILED, UnitStatus.INTERRUPTED) or a.kind == "finalize":
            path = a.log or str(RunLayout(product_dir).unit_log(a.unit, a.attempt))
            target, exists = _rel(path, product_dir, report_dir)
            logs.append(Link(f"{a.unit.rsplit('/', 1)[-1]} #{a.attempt} ({a.status})", target, exists))
    return products, logs


def _rows(summaries: dict[str, SpwSummary], now: float, product_dir: Path, report_dir: Path) -> list[dict]:
    rows = []
    for key, s in summaries.items():
        products, logs = _links(s, product_dir, report_dir)
        rows.append({"image": key, "status": s.status(), "units": f"{len(s.done_units)}/{len(s.units)}",
                     "wall": fmt_duration(s.wall_s(now)), "cpu_h": f"{s.cpu_hours(now):.3f}",
                     "attempts": len(s.attempts), "failures": s.failures, "products": products, "logs": logs})
    return rows


def render_markdown(rows: list[dict], title: str, timeline_name: str, totals: dict) -> str:
    out = [f"# {title}", "", f"![timeline]({timeline_name})", "",
           f"Units done: {totals['done']}/{totals['units']}; attempts: {totals['attempts']}; "
           f"failed attempts: {totals['failures']}; wall time: {totals['wall']}; "
           f"CPU-hours: {totals['cpu_h']:.3f}", "",
           "| image | status | units done | wall time | CPU-hours | attempts | failures | products | logs |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        prods = "<br>".join(f"[{lk.text}]({lk.target})" + ("" if lk.exists else " (missing)")
                            for lk in r["products"]) or "-"
        logs = "<br>".join(f"[{lk.text}]({lk.target})" + ("" if lk.exists else " (missing)")
                           for lk in r["logs"]) or "-"
        out.append(f"| {r['image']} | {r['status']} | {r['units']} | {r['wall']} | {r['cpu_h']} | "
                   f"{r['attempts']} | {r['failures']} | {prods} | {logs} |")
    return "\n".join(out) + "\n"


def render_html(rows: list[dict], title: str, timeline_name: str, totals: dict, errors: list[Attempt]) -> str:
    esc = html.escape

    def links(items: list[Link]) -> str:
        return "<br>".join(f'<a href="{esc(lk.target)}">{esc(lk.text)}</a>' + ("" if lk.exists else " <i>(missing)</i>")
                           for lk in items) or "-"

    body = [f"<h1>{esc(title)}</h1>", f'<img src="{esc(timeline_name)}" alt="timeline" style="max-width:100%">',
            f"<p>Units done: {totals['done']}/{totals['units']}; attempts: {totals['attempts']}; "
            f"failed attempts: {totals['failures']}; wall time: {esc(totals['wall'])}; "
            f"CPU-hours: {totals['cpu_h']:.3f}</p>",
            "<table><tr><th>image</th><th>status</th><th>units done</th><th>wall time</th><th>CPU-hours</th>"
            "<th>attempts</th><th>failures</th><th>products</th><th>logs</th></tr>"]
    for r in rows:
        cls = {"failed": "fail", "done": "ok"}.get(r["status"], "other")
        body.append(f'<tr class="{cls}"><td>{esc(r["image"])}</td><td>{esc(r["status"])}</td><td>{r["units"]}</td>'
                    f'<td>{r["wall"]}</td><td>{r["cpu_h"]}</td><td>{r["attempts"]}</td><td>{r["failures"]}</td>'
                    f'<td>{links(r["products"])}</td><td>{links(r["logs"])}</td></tr>')
    body.append("</table>")
    if errors:
        body.append("<h2>Failed attempts</h2><ul>")
        for a in errors:
            first = (a.error or "").strip().splitlines()
            body.append(f"<li><b>{esc(a.unit)}</b> attempt {a.attempt} on rank {a.rank}@{esc(a.host)}: "
                        f"<code>{esc(first[-1] if first else 'no error message')}</code></li>")
        body.append("</ul>")
    style = ("body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse} "
             "td,th{border:1px solid #bbb;padding:3px 6px;vertical-align:top} tr.fail td{background:#fdd} "
             "tr.ok td{background:#efe}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


def make_report(product_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, title: str | None = None,
                formats: tuple[str, ...] = ("md", "html"), now: float | None = None,
                expected_units: Iterable[str] = ()) -> dict[str, Path]:
    """Write the timeline and the tables of the run in ``product_dir``;
    returns the written files by kind (``timeline``, ``md``, ``html``).
    ``expected_units``: the plan's unit ids, when known (counts units never started)."""
    product_dir = Path(product_dir)
    manifest = Manifest(product_dir)
    if not manifest.path.exists():
        raise UserInputError(f"{manifest.path}: no manifest; has this run been started "
                             f"(faust-hpc run RUNFILE)?")
    attempts = attempts_from_records(manifest.records())
    if not attempts:
        raise UserInputError(f"{manifest.path}: no unit has started yet; nothing to report")
    if now is None:
        now = time.time() if any(a.end is None for a in attempts) else max(a.end or a.start for a in attempts)
    report_dir = Path(out_dir) if out_dir is not None else RunLayout(product_dir).report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    title = title or f"faust-hpc run report: {product_dir.name}"
    summaries = summarize(attempts, expected_units)
    timeline = render_timeline(attempts, report_dir / "timeline.png", title=title, now=now)
    rows = _rows(summaries, now, product_dir, report_dir)
    t0 = min(a.start for a in attempts)
    t1 = max((a.end if a.end is not None else now) for a in attempts)
    totals = {"units": sum(len(s.units) for s in summaries.values()),
              "done": sum(len(s.done_units) for s in summaries.values()),
              "attempts": len(attempts), "failures": sum(a.status == UnitStatus.FAILED for a in attempts),
              "wall": fmt_duration(t1 - t0), "cpu_h": sum(s.cpu_hours(now) for s in summaries.values())}
    written = {"timeline": timeline}
    if "md" in formats:
        written["md"] = report_dir / "report.md"
        _write_atomic(written["md"], render_markdown(rows, title, timeline.name, totals))
    if "html" in formats:
        written["html"] = report_dir / "report.html"
        errors = [a for a in attempts if a.status == UnitStatus.FAILED]
        _write_atomic(written["html"], render_html(rows, title, timeline.name, totals, errors))
    log.info("report written to %s", report_dir)
    return written
