"""Run report: timeline PNG and per-SPW tables from real manifests.

The manifests are written with the launcher's own record writer
(:class:`faust_hpc.run.manifest.Manifest` and :func:`unit_record`) by a small
list scheduler that replays a run of two SPWs on three ranks: prepare, chunk,
finalize, moments and QA units with their dependencies, a retried chunk, and
(for the failed run) a chunk that fails every attempt so its SPW never
finalizes. The report must render both.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from faust_hpc.run.manifest import Manifest
from faust_hpc.run.records import unit_record
from faust_hpc.products.report import attempts_from_records, make_report, summarize

CS = "CB68/244.936GHz_CS/joint/0.5"
CONT = "CB68/246.700GHz_cont/joint/0.5"


def _units() -> list[tuple[str, float, list[str]]]:
    """(unit id, duration s, deps) for two SPWs."""
    out = []
    for key, nchunks, chunk_s in ((CS, 4, 120.0), (CONT, 6, 200.0)):
        out.append((f"{key}/prepare", 20.0, []))
        chunks = [f"{key}/chunk{k:02d}" for k in range(nchunks)]
        out += [(c, chunk_s + 7.0 * k, [f"{key}/prepare"]) for k, c in enumerate(chunks)]
        out.append((f"{key}/finalize", 90.0, chunks))
        out.append((f"{key}/moments", 30.0, [f"{key}/finalize"]))
        out.append((f"{key}/qa", 25.0, [f"{key}/finalize"]))
    return out


def replay_run(product_dir: Path, fail: dict[str, int], retries: int = 1, ranks: int = 3,
               t0: float = 1_800_000_000.0) -> Manifest:
    """Replay a run into a real manifest; ``fail`` maps unit id -> attempts that fail."""
    manifest = Manifest(product_dir)
    units = _units()
    deps = {u: d for u, _, d in units}
    dur = {u: s for u, s, _ in units}
    free_at = {r: t0 for r in range(1, ranks + 1)}
    done_at: dict[str, float] = {}
    dead: set[str] = set()
    attempts: dict[str, int] = {}
    not_before: dict[str, float] = {}
    pending = [u for u, _, _ in units]
    manifest.append({"event": "run", "time": t0, "ranks": ranks + 1, "host": "node01"})
    while pending:
        ready = [u for u in pending if all(d in done_at for d in deps[u])]
        blocked = [u for u in pending if any(d in dead for d in deps[u])]
        for u in blocked:
            pending.remove(u)
            dead.add(u)
        if not ready:
            if blocked:
                continue
            break
        unit = ready[0]
        rank = min(free_at, key=lambda r: (free_at[r], r))
        start = max([free_at[rank], not_before.get(unit, t0)] + [done_at[d] for d in deps[unit]])
        attempt = attempts.get(unit, 0) + 1
        attempts[unit] = attempt
        slug = unit.replace("/", "__")
        log = product_dir / "logs" / f"{slug}.attempt{attempt}.casa.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"CASA log of {unit} attempt {attempt}\n")
        manifest.append(unit_record(unit, "started", attempt=attempt, rank=rank, host="node01", pid=1000 + rank,
                                    time=start, log=str(log), threads=2))
        fails = attempt in fail.get(unit, ())
        end = start + (dur[unit] * 0.4 if fails else dur[unit])
        free_at[rank] = end
        if fails:
            not_before[unit] = end
            manifest.append(unit_record(unit, "failed", attempt=attempt, rank=rank, host="node01", pid=1000 + rank,
                                        time=end, error="Traceback ...\nRuntimeError: tclean returned no image"))
            if attempt > retries:
                pending.remove(unit)
                dead.add(unit)
            continue
        out = product_dir / "images" / "CB68" / f"{slug}.out"
        if unit.endswith("/finalize"):
            out = product_dir / "images" / "CB68" / f"CB68_{unit.split('/')[1]}_joint_0.5_clean.image.pbcor.common.fits"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("product\n")
        manifest.append(unit_record(unit, "done", attempt=attempt, rank=rank, host="node01", pid=1000 + rank,
                                    time=end, outputs=[str(out)]))
        done_at[unit] = end
        pending.remove(unit)
    return manifest


def test_report_complete_run_with_a_retry(tmp_path: Path) -> None:
    prod = tmp_path / "prod"
    manifest = replay_run(prod, fail={f"{CONT}/chunk02": {1}})
    attempts = attempts_from_records(manifest.records())
    summaries = summarize(attempts)
    assert set(summaries) == {CS, CONT}
    assert summaries[CS].status() == "done" and summaries[CONT].status() == "done"
    assert len(summaries[CONT].attempts) == len(summaries[CONT].units) + 1   # one retry
    # CPU-hours = sum of attempt durations x threads (2)
    expected = sum(a.duration(0) * 2 for a in summaries[CS].attempts) / 3600
    assert summaries[CS].cpu_hours(0) == pytest.approx(expected)

    written = make_report(prod)
    png = written["timeline"]
    assert png.exists() and png.stat().st_size > 20_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = written["md"].read_text()
    html = written["html"].read_text()
    for key in (CS, CONT):
        assert key in md and key in html
    row = next(line for line in md.splitlines() if line.startswith(f"| {CONT} "))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[1] == "done" and cells[2] == "10/10" and cells[5] == "11" and cells[6] == "1"
    # links are relative to the report directory and point at existing files
    assert "](../images/CB68/CB68_246.700GHz_cont_joint_0.5_clean.image.pbcor.common.fits)" in md
    assert "../logs/CB68__246.700GHz_cont__joint__0.5__chunk02.attempt1.casa.log" in md
    assert "(missing)" not in md


def test_report_renders_a_run_with_a_failed_unit(tmp_path: Path) -> None:
    prod = tmp_path / "prod"
    replay_run(prod, fail={f"{CS}/chunk01": {1, 2}}, retries=1)
    written = make_report(prod, formats=("md", "html"))
    md = written["md"].read_text()
    row = next(line for line in md.splitlines() if line.startswith(f"| {CS} "))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[1] == "failed"
    assert cells[6] == "2"                                         # both attempts failed
    assert "chunk01 #2 (failed)" in md
    html = written["html"].read_text()
    assert "Failed attempts" in html and "tclean returned no image" in html
    # the other SPW completed normally
    row = next(line for line in md.splitlines() if line.startswith(f"| {CONT} "))
    assert "| done |" in row
    assert written["timeline"].stat().st_size > 20_000


def test_report_tolerates_a_torn_last_line_and_a_running_unit(tmp_path: Path) -> None:
    prod = tmp_path / "prod"
    manifest = replay_run(prod, fail={})
    manifest.append(unit_record(f"{CS}/qa", "started", attempt=2, rank=1, host="node01", pid=5,
                                time=1_800_000_900.0))
    with open(manifest.path, "a") as fh:
        fh.write('{"unit": "CB68/244.936GHz_CS/joint/0.5/mom')   # a crash mid-append
    written = make_report(prod, now=1_800_001_000.0)
    md = written["md"].read_text()
    assert f"| {CS} | running |" in md


def test_report_without_manifest_is_one_clear_error(tmp_path: Path) -> None:
    from faust_hpc.errors import UserInputError

    with pytest.raises(UserInputError, match="no manifest"):
        make_report(tmp_path)


def test_report_command_line(tmp_path: Path) -> None:
    runfile = tmp_path / "run.toml"
    (tmp_path / "data" / "CB68-Setup2").mkdir(parents=True)
    runfile.write_text('[run]\nname = "demo"\ndata_dir = "data"\nproduct_dir = "prod"\n'
                       '[imaging]\nfields = ["CB68"]\nsetup = 2\nspws = ["244.936GHz_CS", "246.700GHz_cont"]\n')
    replay_run(tmp_path / "prod", fail={f"{CS}/chunk01": {1, 2}})
    proc = subprocess.run([sys.executable, "-m", "faust_hpc", "report", str(runfile), "--format", "html"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "prod" / "report" / "timeline.png").exists()
    assert (tmp_path / "prod" / "report" / "report.html").exists()
    assert not (tmp_path / "prod" / "report" / "report.md").exists()
    assert "run report: demo" in (tmp_path / "prod" / "report" / "report.html").read_text()


def test_report_of_a_real_launcher_run_with_a_failed_unit(tmp_path: Path) -> None:
    """The launcher itself (local workers, the cheap test executor) writes the
    manifest; one chunk fails once and is retried, one QA unit fails for good."""
    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "data" / "CB68-Setup2").mkdir(parents=True)
    runfile = tmp_path / "run.toml"
    runfile.write_text('[run]\nname = "cheap"\ndata_dir = "data"\nproduct_dir = "prod"\n'
                       '[imaging]\nfields = ["CB68"]\nsetup = 2\nspws = ["244.936GHz_CS", "246.700GHz_cont"]\n'
                       'nchunks = 2\n[scheduler]\nretries = 1\nexecutor = "tests.units_cheap:run_unit"\n')
    control = tmp_path / "control.json"
    control.write_text(json.dumps({"fail": {f"{CONT}/chunk01": {"mode": "raise", "attempts": [1]},
                                            f"{CS}/qa": {"mode": "exit"}}}))
    env = {**os.environ, "FAUST_CHEAP_CONTROL": str(control),
           "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "faust_hpc", "run", str(runfile), "--local-workers", "2",
                          "--progress-every", "600"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "FAILED" in run.stderr, run.stderr[-2000:]
    proc = subprocess.run([sys.executable, "-m", "faust_hpc", "report", str(runfile)], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = tmp_path / "prod" / "report"
    md = (report / "report.md").read_text()
    cs = next(line for line in md.splitlines() if line.startswith(f"| {CS} "))
    cont = next(line for line in md.splitlines() if line.startswith(f"| {CONT} "))
    # the plan's units count: prepare + 2 chunks + beam + 2 posts + 9 concats (FAUST size) + finalize + moments + qa
    assert "| failed | 17/18 |" in cs and "qa #2 (failed)" in cs
    assert "| done | 18/18 |" in cont and "chunk01 #1 (failed)" in cont
    assert (report / "timeline.png").stat().st_size > 20_000
