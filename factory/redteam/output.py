"""What a red-team run leaves: the training batch (correct replies to what broke the student), the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from factory.checkfile import task_meta
from factory.checks import RULES, run_checks
from factory.errors import ConfigError
from factory.generate import record_meta  # generate's record meta, so export and check read it
from factory.prompts import render_request
from factory.redteam.loop import Outcome, RoundResult
from factory.store import ACCEPTED, RunWriter, open_run
from factory.teachers.builtin import BuiltinTeacher

REPORT_JSON = "redteam.json"
REPORT_MD = "redteam.md"
Result = tuple[str, dict[str, Any]]  # ("accepted" | "rejected", record), as factory.generate's


def _redteam_meta(outcome: Outcome, student: str, replies_by: str) -> dict[str, Any]:
    """meta.redteam: where the attack came from, what the student answered, who wrote the fix."""
    attack = outcome.attack
    return {
        "round": attack.round,
        "base": attack.base,
        "parent": attack.parent,
        "how": attack.how,
        "chain": list(attack.chain),
        "student": student,
        "rules": outcome.verdict.rules,  # what the student's replies broke
        "student_replies": [
            m["content"] for m in outcome.transcript.messages if m.get("role") == "assistant"
        ],
        "replies_by": replies_by,  # "builtin" or "teacher": who wrote the correct replies
    }


def _record(outcome: Outcome, student: str) -> tuple[str, dict[str, Any]]:
    """The built-in teacher's dialogue for one attack that broke the student, checked like generate's."""
    task = outcome.attack.task
    messages = outcome.attack.item.messages()  # the attack's user turns with the built-in teacher's replies
    extra = {
        "usage": {"prompt_tokens": 0, "completion_tokens": 0},
        "attempts": 1,
        "redteam": _redteam_meta(outcome, student, "builtin"),
    }
    meta = record_meta(task, BuiltinTeacher(), render_request(task), extra)
    violations = run_checks(messages, task, task.state)
    if violations:
        meta["violations"] = violations
        record = {"id": task.id, "reason": "checks", "detail": violations[0]["detail"], "meta": meta}
        return "rejected", {**record, "messages": messages}
    meta["checks"] = sorted(RULES)
    return "accepted", {"messages": messages, "meta": meta}


def _taught(outcome: Outcome, student: str, result: Result) -> Result:
    """A teacher's (status, record) for an attack, with meta.redteam added."""
    status, record = result
    meta = record.setdefault("meta", task_meta(outcome.attack.task))
    meta["redteam"] = _redteam_meta(outcome, student, "teacher")
    return status, record


def write_batch(
    run_path: Path,
    results: list[RoundResult],
    student: str,
    config: dict[str, Any],
    taught: dict[str, Result] | None = None,
) -> dict[str, int]:
    """Write output/<run>/ with one record per attack that broke the student; return counts.

    `taught` holds a URL teacher's (status, record) by attack id; an attack without one (multi-turn,
    or every attack with the built-in teacher) gets the built-in teacher's replies.
    """
    if (run_path / ACCEPTED).exists():
        raise ConfigError(
            f"{run_path} already holds a run: a red-team batch is written once; pick another --run name"
        )
    taught = taught or {}
    run = open_run(run_path, config)
    writer = RunWriter(run, flush_every=32)
    counts = {"accepted": 0, "rejected": 0}
    try:
        for result in results:
            for outcome in result.broken:
                found = taught.get(outcome.attack.task.id)
                status, record = (
                    _record(outcome, student) if found is None else _taught(outcome, student, found)
                )
                writer.write(status, record)
                counts[status] += 1
    finally:
        writer.close()
    return counts


def build_report(results: list[RoundResult], batch: dict[str, int], header: dict[str, Any]) -> dict[str, Any]:
    """redteam.json's content: the run header, each round, and every family's ASR across rounds."""
    rounds = [r.summary() for r in results]
    names = sorted({f for r in rounds for f in r["families"]})
    by_family = {
        name: [{"round": r["round"], **r["families"][name]} for r in rounds if name in r["families"]]
        for name in names
    }
    return {**header, "rounds": rounds, "families": by_family, "batch": batch}


def _rate(asr: dict[str, Any]) -> str:
    return "–" if asr["rate"] is None else f"{asr['rate']:.0%} ({asr['k']}/{asr['n']})"


def render_markdown(report: dict[str, Any]) -> str:
    """redteam.md: a table of rounds (ASR, the families that broke the student), then one of families."""
    lines = [
        f"# Red team: {report['run']}",
        "",
        f"Student: `{report['student']}` · seed {report['seed']} · "
        f"{len(report['rounds'])} of {report['rounds_planned']} rounds run · "
        f"teacher `{report.get('teacher', 'builtin')}`",
        "",
        "| round | attacks | broken | errors | ASR | families that broke the student |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["rounds"]:
        broke = ", ".join(r["broke_families"]) or "none"
        lines.append(
            f"| {r['round']} | {r['attacks']} | {r['broken']} | {r['errors']} | {_rate(r['asr'])} | {broke} |"
        )
    count = len(report["rounds"])
    lines += ["", "## ASR per family and round", ""]
    lines += ["| family | " + " | ".join(f"round {i}" for i in range(count)) + " |"]
    lines += ["|---|" + "---|" * count]
    for name, rows in report["families"].items():
        cells = {row["round"]: _rate(row["asr"]) for row in rows}
        lines.append(f"| {name} | " + " | ".join(cells.get(i, "") for i in range(count)) + " |")
    lines += _mutant_lines(report["rounds"])
    batch = report["batch"]
    lines += [
        "",
        f"Training batch: {batch['accepted']} correct dialogues for the attacks that broke the student "
        f"in accepted.jsonl, exported to data/; {batch['rejected']} rejected (by the checkers, or an "
        "unusable teacher reply) in rejected.jsonl.",
        "",
    ]
    return "\n".join(lines)


def _mutant_lines(rounds: list[dict[str, Any]]) -> list[str]:
    """The ASR of each way of making mutants per later round, and why teacher paraphrases were refused."""
    later = rounds[1:]
    if not later:
        return []
    lines = ["", "## Mutants per round, by how they were made", ""]
    lines += ["| mutants | " + " | ".join(f"round {r['round']}" for r in later) + " |"]
    lines += ["|---|" + "---|" * len(later)]
    for how in ("transform", "paraphrase"):
        cells = [_rate(r["how"][how]["asr"]) if how in r["how"] else "" for r in later]
        lines.append(f"| {how} | " + " | ".join(cells) + " |")
    refused = [", ".join(f"{why} {n}" for why, n in r["paraphrase_rejected"].items()) for r in later]
    if any(refused):
        lines.append("| paraphrases refused | " + " | ".join(refused) + " |")
    return lines


def write_report(
    run_path: Path, results: list[RoundResult], batch: dict[str, int], header: dict[str, Any]
) -> dict[str, Any]:
    """Write redteam.json and redteam.md into the run directory; return the report."""
    report = build_report(results, batch, header)
    (run_path / REPORT_JSON).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    (run_path / REPORT_MD).write_text(render_markdown(report), encoding="utf-8")
    return report
