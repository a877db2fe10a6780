"""Benchmark near-duplicate detection: records/s, time and peak RSS for N dialogues, and the dup rate.

Run from the project root:  .venv/bin/python bench/dedup.py [--n 100000] [--threshold 0.85] [--ngram 3]

1. Plans N tasks over the project's worlds with the default mix, cycling run seeds (0, 1, 2, ...)
   `--per-seed` tasks at a time, writes each with the built-in teacher in `--jobs` processes, and
   stores them as a run's accepted.jsonl in a temporary output folder. Not timed as dedup.
2. A fresh process streams that file through `NearDupIndex.check_and_add`, the runner's call, and
   prints the time spent in it, records/s, its peak RSS, and the exact and near-duplicate rates
   with a few near-duplicate pairs; then `save_run` stores the signatures.
3. Another fresh process times what the next run pays at start: `load_runs` from the stored file,
   and again with the file deleted (rebuilt from accepted.jsonl). The stored file holds only what
   check_and_add kept, while the rebuild reads every generated record, duplicates included.

Each stage is its own process so each peak RSS is the index's, not the generator's.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from factory.dedup import NearDupIndex, dialogue_text, signature_path  # noqa: E402

RUN = "bench"
EXAMPLES = 5  # near-duplicate pairs printed


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_chunk(seed: int, count: int) -> list[bytes]:
    """Accepted-style records for the first `count` tasks planned with run seed `seed`."""
    from factory.defaults import DEFAULTS
    from factory.paths import SEEDS_DIR
    from factory.plan import parse_mix, plan_tasks
    from factory.seeds import load_worlds
    from factory.teachers.builtin import write_turns

    tasks = plan_tasks(load_worlds(SEEDS_DIR), count, seed, parse_mix(DEFAULTS["mix"]))
    return [
        orjson.dumps(
            {"messages": write_turns(t), "meta": {"id": t.id, "family": t.family, "template": t.world}}
        )
        + b"\n"
        for t in tasks
    ]


def generate(accepted: Path, n: int, per_seed: int, jobs: int) -> None:
    """Write n built-in dialogues to accepted.jsonl, cycling seeds."""
    chunks = [(seed, min(per_seed, n - seed * per_seed)) for seed in range((n + per_seed - 1) // per_seed)]
    accepted.parent.mkdir(parents=True)
    with accepted.open("wb") as fh, ProcessPoolExecutor(jobs) as pool:
        for lines in pool.map(write_chunk, *zip(*chunks, strict=True)):
            fh.writelines(lines)


def stage_check(output: Path, threshold: float, ngram: int) -> None:
    """Stream the run's records through check_and_add; print rates, RSS and dup examples; save."""
    base = peak_rss_mb()
    index = NearDupIndex(threshold=threshold, ngram=ngram)
    accepted = output / RUN / "accepted.jsonl"
    spent = words = exact = near = 0
    examples: list[tuple[dict, str, float]] = []
    with accepted.open("rb") as fh:
        for line in fh:
            record = orjson.loads(line)
            rid, text = record["meta"]["id"], dialogue_text(record["messages"])
            words += len(text.split())
            started = time.perf_counter()
            dup = index.check_and_add(rid, text)
            spent += time.perf_counter() - started
            if dup is None:
                continue
            match = index.find(text, rid)  # untimed: only to tell exact from near repeats
            if match is not None and match.exact:
                exact += 1
            else:
                near += 1
                if len(examples) < EXAMPLES and match is not None:
                    examples.append((record["meta"], match.id, match.similarity))
    n = exact + near + len(index)
    print(
        f"check_and_add: {n:,} records ({words / n:.0f} words each) in {spent:.1f} s = {n / spent:,.0f}/s; "
        f"peak RSS {peak_rss_mb():.0f} MiB (after imports {base:.0f} MiB)"
    )
    print(
        f"duplicates at threshold {threshold}, {ngram}-grams: {exact:,} exact after normalising "
        f"({exact / n:.2%}), {near:,} near ({near / n:.2%}), total {(exact + near) / n:.2%}"
    )
    wanted = {m["id"] for m, _, _ in examples} | {other for _, other, _ in examples}
    texts = {}  # a second pass: keeping every text in memory would inflate the RSS figure
    with accepted.open("rb") as fh:
        for line in fh:
            record = orjson.loads(line)
            if record["meta"]["id"] in wanted:
                texts[record["meta"]["id"]] = dialogue_text(record["messages"])
    for meta, other, similarity in examples:
        print(f"  {meta['family']}/{meta['template']}: {meta['id']} ~ {other} ({similarity:.2f})")
        print(f"    {texts[meta['id']]!r}\n    {texts[other]!r}")
    started = time.perf_counter()
    path = index.save_run(output, RUN)
    print(f"save_run: {time.perf_counter() - started:.2f} s, {path.stat().st_size / 2**20:.0f} MiB")


def stage_load(output: Path, threshold: float, ngram: int) -> None:
    """Time the next run's start: load_runs from the stored file, then rebuilt from accepted.jsonl."""
    started = time.perf_counter()
    rows = NearDupIndex(threshold=threshold, ngram=ngram).load_runs(output, exclude="next")
    print(f"load_runs from .dedup/: {rows:,} rows in {time.perf_counter() - started:.1f} s")
    signature_path(output, RUN).unlink()
    started = time.perf_counter()
    rows = NearDupIndex(threshold=threshold, ngram=ngram).load_runs(output, exclude="next")
    print(
        f"load_runs rebuilt from accepted.jsonl: {rows:,} rows in {time.perf_counter() - started:.1f} s; "
        f"peak RSS {peak_rss_mb():.0f} MiB (two indexes built in turn)"
    )


def main() -> None:
    """Parse flags, generate, then run each stage in a fresh process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="records (default 100000)")
    parser.add_argument("--threshold", type=float, default=0.85)
    parser.add_argument("--ngram", type=int, default=3)
    parser.add_argument("--per-seed", type=int, default=5000, help="tasks planned per run seed")
    parser.add_argument("--jobs", type=int, default=2, help="processes writing dialogues")
    parser.add_argument("--stage", choices=["check", "load"], help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage == "check":
        stage_check(args.output, args.threshold, args.ngram)
        return
    if args.stage == "load":
        stage_load(args.output, args.threshold, args.ngram)
        return
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "output"
        started = time.perf_counter()
        generate(output / RUN / "accepted.jsonl", args.n, args.per_seed, args.jobs)
        print(f"planned and wrote {args.n:,} dialogues in {time.perf_counter() - started:.1f} s")
        for stage in ("check", "load"):
            flags = ["--threshold", str(args.threshold), "--ngram", str(args.ngram)]
            cmd = [sys.executable, __file__, "--stage", stage, "--output", str(output), *flags]
            subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
