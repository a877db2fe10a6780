"""Where a run's attacks came from: teacher-written, code-transformed, code-built or planned wording.

An adversarial batch mixes four origins, and a user tuning it wants to see the mix: how many
attacks the teacher wrote (factory.attack_writer) and why it failed on the rest, how many travel
through a transform chain (factory.plan.overlay), how many are code-built payloads (a forged
STATE block, a fake transcript), and how many the teacher (or the phrase banks) worded from the
family's description.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from factory.report_stats import iter_jsonl
from factory.store import ACCEPTED, REJECTED

SOURCES = ("teacher_written", "chain", "code_payload", "planned")


def source_of(meta: dict[str, Any]) -> str:
    """The origin of one record's attack, from its meta and plan."""
    target = meta.get("plan", {}).get("target", {})
    if target.get("written_by"):
        return "teacher_written"
    if target.get("chain"):
        return "chain"
    if target.get("payload"):
        return "code_payload"
    return "planned"


def summarize(run_path: Path) -> dict[str, Any]:
    """Counts by origin (accepted and all), chains by transform, and the attack writer's misses."""
    accepted: Counter[str] = Counter()
    everything: Counter[str] = Counter()
    transforms: Counter[str] = Counter()
    rejected_attacks: Counter[str] = Counter()
    fallbacks: Counter[str] = Counter()
    asked = 0
    for name in (ACCEPTED, REJECTED):
        for record in iter_jsonl(run_path / name):
            meta = (record or {}).get("meta", {})
            if meta.get("kind") != "adversarial":
                continue
            source = source_of(meta)
            everything[source] += 1
            accepted[source] += name == ACCEPTED
            transforms.update(meta.get("plan", {}).get("target", {}).get("chain") or [])
            writer = meta.get("attack_writer")
            if writer:
                asked += 1
                rejected_attacks.update(writer.get("rejected", {}))
                if writer.get("source") == "plan":
                    fallbacks[(writer.get("error") or "no valid attack").split(":")[0]] += 1
    return {
        "attacks": sum(everything.values()),
        "by_source": {s: {"accepted": accepted[s], "all": everything[s]} for s in SOURCES},
        "chain_transforms": dict(transforms.most_common()),
        "attack_writer": {
            "asked": asked,
            "written": everything["teacher_written"],
            "fell_back": sum(fallbacks.values()),
            "fallback_reasons": dict(fallbacks.most_common()),
            "rejected_attacks": dict(rejected_attacks.most_common()),
        },
    }


def sources_markdown(summary: dict[str, Any]) -> list[str]:
    """The report.md section for an origin summary."""
    lines = ["## Attack origins", "", "| origin | accepted | generated |", "|---|---|---|"]
    for source, counts in summary["by_source"].items():
        lines.append(f"| {source} | {counts['accepted']} | {counts['all']} |")
    writer = summary["attack_writer"]
    if writer["asked"]:
        lines += [
            "",
            f"The teacher was asked to write {writer['asked']} attacks: {writer['written']} used, "
            f"{writer['fell_back']} fell back to the planned attack ({writer['fallback_reasons'] or '-'}). "
            f"Attacks it wrote that were not kept, by reason: {writer['rejected_attacks'] or '-'}.",
        ]
    if summary["chain_transforms"]:
        shown = ", ".join(f"{name} {count}" for name, count in summary["chain_transforms"].items())
        lines += ["", f"Transforms in chains: {shown}."]
    return lines
