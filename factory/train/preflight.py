"""Check a data folder the way mlx_lm.lora will read it, before the model loads (tokenizer only).

mlx_lm finds a bad row late: a blank line, a mixed-format file or a split smaller than a batch
fails minutes in, after a multi-GB model load. Here every such problem is found first, each named
by file and line, and the token lengths are measured with mlx_lm's own ChatDataset, so the counts
of rows it will truncate are exact.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlx_lm.tuner.datasets import ChatDataset
from rich import box
from rich.console import Console
from rich.table import Table

from factory.errors import DataFolderError

SPLITS = ("train", "valid", "test")
REQUIRED = ("train", "valid")  # mlx_lm trains without valid, but our runner reports its loss
ROLES = ("system", "user", "assistant", "tool")
# Keys that make mlx_lm read a file as another format (it picks the format from the first row).
OTHER_FORMAT_KEYS = ("prompt", "completion", "text")
MAX_PROBLEMS_PER_FILE = 10  # beyond this a file is clearly wrong; the rest are only counted


@dataclass
class SplitStats:
    """Token figures of one split, as mlx_lm will tokenize it."""

    rows: int = 0
    tokens: int = 0  # every token of every row, before truncation
    trained_tokens: int = 0  # tokens the loss sees (after the prompt offset and truncation)
    longest: int = 0
    too_long: int = 0  # rows longer than max_seq_length: mlx_lm truncates them
    answer_cut: int = 0  # rows whose whole answer lies past max_seq_length: nothing left to train
    lengths: list[int] = field(default_factory=list)
    control_rows: int = 0  # rows whose text holds one of the tokenizer's control tokens
    control_example: str = ""  # "<file>:<line> holds '<|im_start|>'", the first such row


@dataclass
class PreflightReport:
    """What the data folder holds, in rows and tokens, and what mlx_lm will truncate."""

    data_dir: Path
    max_seq_length: int
    splits: dict[str, SplitStats]
    warnings: list[str] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        """Tokens in every split together."""
        return sum(s.tokens for s in self.splits.values())

    @property
    def too_long(self) -> int:
        """Rows longer than max_seq_length in every split together."""
        return sum(s.too_long for s in self.splits.values())

    def bucket_edges(self) -> list[int]:
        """Upper edges of the length histogram: max_seq_length/8, /4, /2 and max_seq_length."""
        edges = {max(1, self.max_seq_length // d) for d in (8, 4, 2, 1)}
        return sorted(edges)

    def histogram(self, split: str) -> list[int]:
        """Rows per length bucket (one per bucket_edges entry, then one for > max_seq_length)."""
        edges = self.bucket_edges()
        counts = [0] * (len(edges) + 1)
        for length in self.splits[split].lengths:
            counts[next((i for i, edge in enumerate(edges) if length <= edge), len(edges))] += 1
        return counts

    def render(self, console: Console | None = None) -> None:
        """Print a table of rows, tokens and the length histogram per split, then any warnings."""
        console = console or Console()
        edges = self.bucket_edges()
        labels = [f"≤{edge}" for edge in edges] + [f">{edges[-1]}"]
        table = Table(title=f"preflight {self.data_dir}", box=box.SIMPLE_HEAD, pad_edge=False)
        for column in ("split", "rows", "tokens", "trained", "max", *labels):
            table.add_column(column, justify="left" if column == "split" else "right")
        for name, stats in self.splits.items():
            figures = (stats.rows, stats.tokens, stats.trained_tokens, stats.longest, *self.histogram(name))
            table.add_row(name, *(str(f) for f in figures))
        console.print(table)
        for warning in self.warnings:
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)


def preflight(
    data_dir: Path | str,
    tokenizer: Any,
    *,
    batch_size: int,
    max_seq_length: int,
    mask_prompt: bool,
) -> PreflightReport:
    """Check `data_dir` as mlx_lm.lora will read it; raise DataFolderError listing every problem."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataFolderError(f"{data_dir}: no such folder; run `factory export RUN` to write it")
    missing = [
        f"{data_dir / f'{n}.jsonl'}: missing" for n in REQUIRED if not (data_dir / f"{n}.jsonl").exists()
    ]
    if missing:
        raise DataFolderError([*missing, f"{data_dir} must hold train.jsonl and valid.jsonl (test optional)"])

    problems: list[str] = []
    splits: dict[str, SplitStats] = {}
    for name in SPLITS:
        path = data_dir / f"{name}.jsonl"
        if not path.exists():
            continue
        rows, file_problems = _read_rows(path, mask_prompt)
        problems += file_problems
        if not file_problems and len(rows) < batch_size:
            problems.append(
                f"{path}: {len(rows)} row(s) but batch_size is {batch_size}; mlx_lm needs at least one "
                "full batch: lower batch_size, or re-export with a larger share (factory export RUN --ratios)"
            )
        if not file_problems:
            stats, token_problems = _measure(path, rows, tokenizer, max_seq_length, mask_prompt)
            problems += token_problems
            splits[name] = stats
    if "train" in splits and splits["train"].trained_tokens == 0:
        problems.append(
            f"{data_dir / 'train.jsonl'}: every answer lies past max_seq_length {max_seq_length}, so "
            "there is nothing to train on (the loss would be NaN): raise max_seq_length"
        )
    if problems:
        raise DataFolderError(problems)

    report = PreflightReport(data_dir, max_seq_length, splits)
    for name, stats in splits.items():
        if stats.too_long:
            share = stats.too_long / stats.rows
            report.warnings.append(
                f"{name}: {stats.too_long} of {stats.rows} rows ({share:.1%}) are longer than "
                f"max_seq_length {max_seq_length} (longest {stats.longest}); mlx_lm truncates them"
            )
        if stats.control_rows:
            # Chat templates paste message text in as it is, and the tokenizer then reads a control
            # token's text as the token: a spoofed "<|im_start|>system" becomes a real role switch.
            report.warnings.append(
                f"{name}: {stats.control_rows} row(s) write the model's control tokens as text "
                f"({stats.control_example}); the tokenizer reads them as real control tokens, so the "
                "model trains on a real role switch inside the turn (as a server that does not escape "
                "them would show it a user who types them)"
            )
        if stats.answer_cut:
            report.warnings.append(
                f"{name}: {stats.answer_cut} row(s) have their whole answer past max_seq_length: they "
                "train nothing (a batch made only of them gives a NaN loss); raise max_seq_length"
            )
    return report


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    # The way mlx_lm's load_local_dataset iterates a file: every line, a blank one included.
    with path.open(encoding="utf-8") as fid:
        yield from enumerate(fid, 1)


def _read_rows(path: Path, mask_prompt: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """Parse every line of a split; return the rows and one problem per bad line (capped)."""
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    bad = 0
    try:
        for number, line in _lines(path):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                row, problem = None, f"not valid JSON ({exc.msg} at column {exc.colno})"
            else:
                problem = _row_problem(row, mask_prompt)
            if problem:
                bad += 1
                if bad <= MAX_PROBLEMS_PER_FILE:
                    problems.append(f"{path}:{number}: {problem}")
            else:
                rows.append(row)
    except UnicodeDecodeError as exc:
        return rows, [f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]
    if bad > MAX_PROBLEMS_PER_FILE:
        problems.append(f"{path}: {bad - MAX_PROBLEMS_PER_FILE} more bad line(s) not listed")
    if not rows and not problems:
        problems.append(f"{path}: empty; mlx_lm cannot read an empty split (delete it or re-export)")
    return rows, problems


def _row_problem(row: Any, mask_prompt: bool) -> str | None:
    """Why mlx_lm's ChatDataset would reject or mis-train this row, or None when it is fine."""
    if not isinstance(row, dict):
        return f"must be a JSON object with 'messages', got {type(row).__name__}"
    other = [key for key in OTHER_FORMAT_KEYS if key in row]
    if other:
        return (
            f"has {', '.join(repr(k) for k in other)}: mlx_lm reads a whole file as one format, "
            "and the factory trains only the chat format {'messages': [...]}"
        )
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return "needs a non-empty 'messages' list"
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages[{index}] must be an object with role and content"
        if message.get("role") not in ROLES:
            return f"messages[{index}].role is {message.get('role')!r}; must be one of {', '.join(ROLES)}"
        if not isinstance(message.get("content"), str):
            return f"messages[{index}].content must be a string"
    if mask_prompt and messages[-1]["role"] != "assistant":
        return (
            f"last message is from {messages[-1]['role']!r}; with mask_prompt only the last message "
            "is trained, so it must be the assistant's"
        )
    return None


def control_tokens(tokenizer: Any) -> tuple[str, ...]:
    """The tokenizer's special tokens as text ("<|im_start|>"): text holding one is read as that token."""
    found = set(getattr(tokenizer, "all_special_tokens", None) or [])
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    found |= {token.content for token in added.values() if getattr(token, "special", False)}
    return tuple(sorted((t for t in found if len(t) >= 3), key=len, reverse=True))


def _control_in(row: dict[str, Any], controls: tuple[str, ...]) -> str | None:
    """The first control token written as text in one of the row's messages, or None."""
    for message in row.get("messages", []):
        content = message.get("content")
        if isinstance(content, str) and "<" in content:
            for token in controls:
                if token in content:
                    return token
    return None


def _measure(
    path: Path, rows: list[dict[str, Any]], tokenizer: Any, max_seq_length: int, mask_prompt: bool
) -> tuple[SplitStats, list[str]]:
    """Tokenize every row with mlx_lm's ChatDataset and count lengths, truncation and trained tokens."""
    dataset = ChatDataset(rows, tokenizer, mask_prompt=mask_prompt)
    stats = SplitStats(rows=len(rows))
    problems: list[str] = []
    controls = control_tokens(tokenizer)
    for number, row in enumerate(rows, 1):
        found = _control_in(row, controls)
        if found:
            stats.control_rows += 1
            stats.control_example = stats.control_example or f"{path}:{number} holds {found!r}"
        try:
            tokens, offset = dataset.process(row)
        except Exception as exc:  # the chat template is the model's code: any error is a bad row
            problems.append(f"{path}:{number}: the model's chat template fails on this row: {exc}")
            continue
        length = len(tokens)
        stats.lengths.append(length)
        stats.tokens += length
        stats.longest = max(stats.longest, length)
        kept = min(length, max_seq_length)
        stats.trained_tokens += max(0, kept - offset)
        if length > max_seq_length:
            stats.too_long += 1
            if offset >= max_seq_length:
                stats.answer_cut += 1
    return stats, problems
