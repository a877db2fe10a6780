"""Where the project's data folders are: found from the package, so any working directory works."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROMPTS_DIR = PROJECT_ROOT / "prompts"
SEEDS_DIR = PROJECT_ROOT / "seeds"
