"""The export holdout: families and worlds whose (world, family) groups go to test only.

`--holdout 'families=a,b;worlds=w'` on `factory export` and `factory generate` (which keeps it in
run.json, so a resumed run exports the same way). Names are checked against prompts/families.yaml
and the seed templates' world names, so a typo fails before any work.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from factory.errors import ConfigError
from factory.mix import families
from factory.seeds import load_worlds

HOLDOUT_KEYS = ("families", "worlds")
NO_HOLDOUT = "none"  # `--holdout none` overrides a holdout stored in run.json


@dataclass(frozen=True)
class Holdout:
    """Families and worlds kept out of train and valid: their groups go to test only."""

    families: tuple[str, ...] = ()
    worlds: tuple[str, ...] = ()

    def holds(self, group: tuple[str, str]) -> bool:
        """Whether a (world, family) group is held out."""
        world, family = group
        return world in self.worlds or family in self.families

    def text(self) -> str:
        """The canonical `families=a,b;worlds=w` form."""
        return ";".join(f"{key}={','.join(getattr(self, key))}" for key in HOLDOUT_KEYS if getattr(self, key))


def parse_holdout(
    text: str | None, known_families: Collection[str], known_worlds: Collection[str]
) -> Holdout | None:
    """Parse `families=a,b;worlds=w` (either part may be left out); None for None, '' or 'none'."""
    if text is None or text.strip().lower() in ("", NO_HOLDOUT):
        return None
    known = {"families": known_families, "worlds": known_worlds}
    names: dict[str, tuple[str, ...]] = {}
    problems: list[str] = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, values = part.partition("=")
        key = key.strip()
        if not sep or key not in HOLDOUT_KEYS or key in names:
            raise ConfigError(
                f"--holdout {text!r}: {part!r} is not families=a,b or worlds=w (each at most once, "
                "joined by ';', e.g. 'families=persona_swap;worlds=tutor')"
            )
        listed = sorted({v.strip() for v in values.split(",") if v.strip()})
        unknown = [v for v in listed if v not in known[key]]
        if unknown:
            problems.append(
                f"unknown {key} {', '.join(unknown)}; valid {key}: {', '.join(sorted(known[key]))}"
            )
        names[key] = tuple(listed)
    if problems:
        raise ConfigError(f"--holdout {text!r}: " + "\n  ".join(problems))
    holdout = Holdout(**names)
    if not holdout.families and not holdout.worlds:
        raise ConfigError(f"--holdout {text!r} names no family or world; e.g. 'families=persona_swap'")
    return holdout


def resolve_holdout(text: str | None, seeds_dir: str | Path) -> Holdout | None:
    """parse_holdout against the catalogue's families and the world names of the seeds folder."""
    if text is None or text.strip().lower() in ("", NO_HOLDOUT):
        return None  # no need to load the seeds
    return parse_holdout(text, families(), [world.name for world in load_worlds(seeds_dir)])
