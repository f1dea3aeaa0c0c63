"""Compare a benchmark at two commits side by side: old and new runs alternate in one session.

This machine's speed drifts by up to 2x between sessions and by 10-25% within one, so a number is
only comparable with one measured next to it. Each commit is exported (``git archive``) into a
temporary directory, and the benchmark runs there as a fresh process with ``PYTHONPATH`` set to that
checkout and a neutral working directory (the same for both), alternating old, new, new, old, ...
so that a slow stretch of the machine falls on both. For every numeric field of the benchmark's
final JSON line it prints the runs and new/old of the medians.

    python bench/alternate.py env --old 2e27568 --new HEAD --rounds 3
    python bench/alternate.py selfplay --old 2e27568 -- --sessions 256

Prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def export(commit: str, into: Path) -> str:
    """Extract ``commit``'s tree into ``into``; returns the full commit id."""
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{commit}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", sha], check=True, capture_output=True).stdout
    into.mkdir(parents=True)
    with tempfile.TemporaryFile() as tar_file:
        tar_file.write(archive)
        tar_file.seek(0)
        with tarfile.open(fileobj=tar_file) as tar:
            tar.extractall(into, filter="data")
    return sha


def run_bench(checkout: Path, bench: str, args: list[str], cwd: Path) -> dict[str, object]:
    """One run of ``bench/<bench>.py`` from ``checkout``; its final JSON line."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    proc = subprocess.run(
        [sys.executable, str(checkout / "bench" / f"{bench}.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench/{bench}.py at {checkout.name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def numeric_fields(result: dict[str, object]) -> dict[str, float]:
    return {k: float(v) for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def compare(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, object]]:
    """Per field: every run of each side and new/old of the medians."""
    fields = sorted(set(runs["old"][0]) & set(runs["new"][0]))
    table: dict[str, dict[str, object]] = {}
    for field in fields:
        old = [r[field] for r in runs["old"]]
        new = [r[field] for r in runs["new"]]
        old_median = statistics.median(old)
        table[field] = {
            "old": old,
            "new": new,
            "new_over_old": round(statistics.median(new) / old_median, 3) if old_median else None,
        }
    return table


def main() -> dict[str, object]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bench", help="a benchmark's name in bench/, e.g. env, selfplay, mcts")
    parser.add_argument("--old", required=True, help="the commit to compare against")
    parser.add_argument("--new", default="HEAD", help="the commit under test (default HEAD)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side (default 3)")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    options = parser.parse_args(argv[:split])
    bench_args = argv[split + 1 :]  # after --: the benchmark's own arguments
    with tempfile.TemporaryDirectory(prefix="smz-alternate-") as tmp:
        root = Path(tmp)
        checkouts = {side: root / side for side in ("old", "new")}
        commits = {side: export(getattr(options, side), checkouts[side]) for side in checkouts}
        neutral = root / "cwd"
        neutral.mkdir()
        runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
        for round_ in range(options.rounds):
            order = ("old", "new") if round_ % 2 == 0 else ("new", "old")
            for side in order:
                result = numeric_fields(run_bench(checkouts[side], options.bench, bench_args, neutral))
                runs[side].append(result)
                print(f"round {round_ + 1} {side}: {json.dumps(result)}", file=sys.stderr, flush=True)
    return {
        "bench": "alternate",
        "target": options.bench,
        "args": bench_args,
        "old": commits["old"][:12],
        "new": commits["new"][:12],
        "rounds": options.rounds,
        "fields": compare(runs),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}",
    }


if __name__ == "__main__":
    print(json.dumps(main()))
