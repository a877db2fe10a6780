"""Seeds: shipped worlds load and expand well; broken templates are reported by file and key path."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from factory.errors import SeedError
from factory.models import World
from factory.seeds import expand, load_worlds, validate_template
from factory.seeds.load import build_world
from factory.seeds.validate import TOP_KEYS
from factory.state import has_path, lookup, parse_state, render_state

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
BAD = Path(__file__).resolve().parent / "data" / "seeds_bad"
SAMPLES = 40  # expansions per world; enough for every optional field to be both present and absent
WORLD_NAMES = {
    "personal_assistant",
    "clinic_front_desk",
    "warehouse_ops",
    "bank_support",
    "home_automation",
    "game_studio_release_bot",
    "tutor",
    "restaurant_bookings",
}


@pytest.fixture(scope="module")
def worlds() -> list[World]:
    return load_worlds(SEEDS)


@pytest.fixture(scope="module")
def samples(worlds: list[World]) -> dict[str, list[Any]]:
    return {w.name: [expand(w, 0, i) for i in range(SAMPLES)] for w in worlds}


def concrete_paths(state: dict[str, Any], path: str) -> list[str]:
    """Every concrete path a `[*]` template path stands for in one state."""
    head, star, rest = path.partition("[*]")
    if not star:
        return [path] if has_path(state, path) else []
    if not has_path(state, head) or not isinstance(lookup(state, head), list):
        return []
    out: list[str] = []
    for i in range(len(lookup(state, head))):
        out += concrete_paths(state, f"{head}[{i}]{rest}")
    return out


def template_form(path: str) -> str:
    return re.sub(r"\[\d+\]", "[*]", path)


# --- the shipped worlds ---


def test_every_shipped_world_loads_in_file_name_order(worlds: list[World]) -> None:
    assert {w.name for w in worlds} == WORLD_NAMES
    assert [Path(w.source).name for w in worlds] == sorted(p.name for p in SEEDS.glob("*.yaml"))


def test_world_fields_are_filled(worlds: list[World]) -> None:
    for w in worlds:
        assert w.domain and w.source.endswith(".yaml") and w.template, w.name
        assert set(w.allowed_actions).isdisjoint(w.not_allowed_actions), w.name
        assert "$pool" not in json.dumps(w.template) and "$world" not in json.dumps(w.template), w.name


def test_shipped_worlds_meet_the_project_bar(worlds: list[World]) -> None:
    for w in worlds:
        text = Path(w.source).read_text()
        never = [a["path"] for a in yaml.safe_load(text)["askable"] if a.get("never")]
        assert 60 <= len(text.splitlines()) <= 150, w.name
        assert len(w.trust_levels) >= 3, w.name
        assert len(w.allowed_actions) >= 4 and len(w.not_allowed_actions) >= 3, w.name
        assert text.count("$optional") >= 3 and text.count("$list") >= 2, w.name
        assert len(w.askables) >= 10 and len(never) >= 2, w.name
        assert len(w.benign_requests) >= 6 and len(w.secrets) >= 1, w.name


def test_identity_names_differ_between_worlds(samples: dict[str, list[Any]]) -> None:
    names = {world: {s.state["identity"]["name"] for s in ss} for world, ss in samples.items()}
    assert all(len(n) == 1 for n in names.values())
    assert len({n.pop() for n in names.values()}) == len(WORLD_NAMES)


def test_every_state_has_the_required_fields(samples: dict[str, list[Any]]) -> None:
    for ss in samples.values():
        for s in ss:
            state, world = s.state, s.world
            assert isinstance(state["identity"]["name"], str) and isinstance(state["user"]["name"], str)
            assert state["trust_level"] in world.trust_levels
            assert state["allowed_actions"] == list(world.allowed_actions)
            now = dt.datetime.fromisoformat(state["current_time"])
            assert now.utcoffset() is not None and re.fullmatch(
                r".+T\d\d:\d\d:00[+-]\d\d:\d\d", state["current_time"]
            )
            assert isinstance(state["timezone"], str) and "/" in state["timezone"]
            assert isinstance(state["secret_policy"], str) and len(state["secret_policy"]) > 20
            assert any(isinstance(v, list) for v in state.values()), world.name


def test_secret_values_are_strings_of_six_or_more(samples: dict[str, list[Any]]) -> None:
    for ss in samples.values():
        for s in ss:
            for secret in s.world.secrets:
                value = lookup(s.state, secret.path)
                assert isinstance(value, str) and len(value) >= 6, (s.world.name, secret.path, value)


def test_every_state_renders_and_parses_back(samples: dict[str, list[Any]]) -> None:
    for ss in samples.values():
        for s in ss[:5]:
            assert parse_state(render_state(s.state)) == s.state
            pretty = f"== STATE ==\n{json.dumps(s.state, indent=2, ensure_ascii=False)}\n== END STATE =="
            assert parse_state(pretty) == s.state


def test_expansion_is_deterministic_and_depends_on_seed_and_index(worlds: list[World]) -> None:
    for w in worlds:
        again = [expand(w, 7, i) for i in range(5)]
        for i, s in enumerate(again):
            assert s == expand(w, 7, i) and s.index == i and s.world is w
        other_seed = [expand(w, 8, i).state for i in range(5)]
        assert all(a.state != b for a, b in zip(again, other_seed, strict=True)), w.name
        assert len({json.dumps(s.state) for s in again}) == 5, w.name


def test_expansion_is_the_same_in_another_process_with_another_hash_seed(worlds: list[World]) -> None:
    code = (
        "import json; from factory.seeds import load_worlds, expand; "
        "w = load_worlds('seeds')[0]; print(json.dumps([expand(w, 3, i).state for i in range(3)]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [expand(worlds[0], 3, i).state for i in range(3)]


def test_optional_fields_are_sometimes_absent_and_recorded(samples: dict[str, list[Any]]) -> None:
    for world, ss in samples.items():
        absent_somewhere: set[str] = set()
        present_somewhere: set[str] = set()
        for s in ss:
            assert len(set(s.absent)) == len(s.absent)
            for path in s.absent:
                assert not has_path(s.state, path), (world, path)
                parent = path.rsplit(".", 1)[0] if "." in path else None
                assert parent is None or has_path(s.state, parent), (world, path)
                absent_somewhere.add(template_form(path))
            present_somewhere |= {template_form(p) for p in _all_paths(s.state)}
        assert len(absent_somewhere) >= 3, world
        # every optional field shows up in some other sample: absence is chance, not a broken path
        assert absent_somewhere <= present_somewhere, (world, absent_somewhere - present_somewhere)


def _all_paths(state: Any, prefix: str = "") -> list[str]:
    if isinstance(state, dict):
        out = []
        for k, v in state.items():
            p = f"{prefix}.{k}" if prefix else k
            out += [p, *_all_paths(v, p)]
        return out
    if isinstance(state, list):
        return [q for i, v in enumerate(state) for q in [f"{prefix}[{i}]", *_all_paths(v, f"{prefix}[{i}]")]]
    return []


def test_askables_resolve_in_some_states_and_never_ones_in_none(samples: dict[str, list[Any]]) -> None:
    for world, ss in samples.items():
        raw = yaml.safe_load((SEEDS / f"{world}.yaml").read_text())["askable"]
        never = {a["path"] for a in raw if a.get("never")}
        for askable in ss[0].world.askables:
            hits = [(s.state, p) for s in ss for p in concrete_paths(s.state, askable.path)]
            if askable.path in never:
                assert not hits, (world, askable.path)
                continue
            assert hits, (world, askable.path)
        # phrasings fill in from the item they ask about
        for askable in ss[0].world.askables:
            head = askable.path.rpartition("[*]")[0]
            for s in ss[:5]:
                for item_path in concrete_paths(s.state, f"{head}[*]") if head else []:
                    item = lookup(s.state, item_path)
                    for phrasing in askable.ask:
                        filled = phrasing.format(**item)
                        assert "{" not in filled, (world, phrasing)


def test_relative_dates_follow_the_current_time(samples: dict[str, list[Any]]) -> None:
    for s in samples["personal_assistant"]:
        now = dt.datetime.fromisoformat(s.state["current_time"])
        for task in s.state["pending_tasks"]:
            due = dt.datetime.fromisoformat(task["due"])
            assert now < due <= now + dt.timedelta(days=15)
            assert due.utcoffset() == now.utcoffset() and due.minute in (0, 15, 30, 45)
    for s in samples["home_automation"]:
        now = dt.datetime.fromisoformat(s.state["current_time"])
        assert all(dt.datetime.fromisoformat(d["last_seen"]) < now for d in s.state["devices"])


def test_counts_sums_and_means_agree_with_their_lists(samples: dict[str, list[Any]]) -> None:
    for s in samples["warehouse_ops"]:
        st = s.state
        assert st["open_pick_orders"] == len(st["pick_orders"])
        assert st["pallets_inbound"] == sum(x["pallets"] for x in st["inbound_shipments"])
    for s in samples["tutor"]:
        scores = [q["score"] for q in s.state["quiz_history"]]
        assert s.state["average_quiz_score"] == round(sum(scores) / len(scores), 2)
    for s in samples["bank_support"]:
        assert s.state["total_balance"] == round(sum(a["balance"] for a in s.state["accounts"]), 2)


def test_unique_lists_have_no_repeated_keys(samples: dict[str, list[Any]]) -> None:
    for s in samples["personal_assistant"]:
        titles = [t["title"] for t in s.state["pending_tasks"]]
        assert len(titles) == len(set(titles))
    for s in samples["home_automation"]:
        names = [d["name"] for d in s.state["devices"]]
        assert len(names) == len(set(names))


def test_patterns_make_the_characters_they_promise(samples: dict[str, list[Any]]) -> None:
    for s in samples["personal_assistant"]:
        assert re.fullmatch(r"T-\d{4}", s.state["pending_tasks"][0]["id"])
        assert re.fullmatch(r"[A-Z][a-z]{5}\d\d![a-z]{2}", s.state["secrets"]["email_password"])
    for s in samples["game_studio_release_bot"]:
        assert re.fullmatch(r"@[a-z]{5}\d\d", s.state["user"]["handle"])  # "\@" is a literal @


def test_readme_example_is_valid_and_expands_as_shown() -> None:
    readme = (SEEDS / "README.md").read_text()
    example = re.search(r"## A full example\n\n```yaml\n(.*?)```", readme, re.DOTALL)
    shown = re.search(r"index=6\)` then gives this state.*?```json\n(.*?)```", readme, re.DOTALL)
    assert example and shown
    data = yaml.safe_load(example.group(1))
    assert validate_template(data, "README.md") == []
    sample = expand(build_world(data, "README.md"), 0, 6)
    assert sample.state == json.loads(shown.group(1))
    assert sample.absent == ("user.loyalty_points",)


# --- broken templates ---

# (file, key path) of every problem in tests/data/seeds_bad/, in the order they are reported
EXPECTED_PROBLEMS = [
    ("a_generators.yaml", "state.user.name.$pool"),
    ("a_generators.yaml", "state.user.age.$int"),
    ("a_generators.yaml", "state.user.mood.$chioce"),
    ("a_generators.yaml", "state.user.nickname.$optional"),
    ("a_generators.yaml", "state.user.level.unit"),
    ("a_generators.yaml", "state.user.joined"),
    ("a_generators.yaml", "state.user.colour.$weights"),
    ("a_generators.yaml", "state.current_time.$now.hours"),
    ("a_generators.yaml", "state.current_time.$now.zones.Asia/Tokyo"),
    ("a_generators.yaml", "state.timezone.$timezone"),
    ("a_generators.yaml", "state.tasks.$list"),
    ("a_generators.yaml", "state.tasks.$list.item.due.$datetime"),
    ("b_references.yaml", "colour"),
    ("b_references.yaml", "benign_requests"),
    ("b_references.yaml", "actions.not_allowed"),
    ("b_references.yaml", "state.secret_policy"),
    ("b_references.yaml", "state.trust_level"),
    ("b_references.yaml", "state.allowed_actions"),
    ("b_references.yaml", "state.task_count.$count"),
    ("b_references.yaml", "secrets[0].path"),
    ("b_references.yaml", "secrets[1].path"),
    ("b_references.yaml", "askable[0].path"),
    ("b_references.yaml", "askable[1].path"),
    ("b_references.yaml", "askable[2].ask[0]"),
    ("b_references.yaml", "askable[3].path"),
    ("b_references.yaml", "askable[3].ask[0]"),
    ("c_syntax.yaml", "line 5, column 8"),
    ("e_duplicate.yaml", "world"),
    ("f_duplicate_key.yaml", "line 3, column 1"),
]


@pytest.fixture(scope="module")
def bad_problems() -> list[str]:
    with pytest.raises(SeedError) as info:
        load_worlds(BAD)
    assert str(info.value).startswith("invalid seed template(s):")
    return info.value.problems


def test_broken_templates_report_every_problem_with_file_and_key_path(bad_problems: list[str]) -> None:
    where = [(Path(p.split(": ")[0]).name, p.split(": ")[1]) for p in bad_problems]
    assert where == EXPECTED_PROBLEMS
    assert all(p.startswith(str(BAD) + os.sep) for p in bad_problems)  # the file is named as it was found


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("state.user.age.$int", "expected [low, high] (integers) with low <= high, got [9, 3]"),
        ("state.user.mood.$chioce", "unknown generator; expected one of $choice"),
        ("state.user.nickname.$optional", "strictly between 0 and 1, got 1.5"),
        ("state.user.joined", "quote it"),
        ("state.user.name.$pool", "unknown pool 'nobody'"),
        ("state.trust_level", "got ['admin']"),
        ("secrets[1].path", "6+ characters"),
        ("askable[1].path", "never: true"),
        ("askable[2].ask[0]", "placeholder {title} is not an always-present item field (due)"),
        ("world", "duplicate world name 'probe_world' (also in"),
        ("line 5, column 8", "YAML syntax error: expected ',' or ']'"),
        ("line 3, column 1", "duplicate key 'domain'"),
    ],
)
def test_problem_messages_say_what_is_expected(bad_problems: list[str], path: str, words: str) -> None:
    matching = [p for p in bad_problems if p.split(": ", 2)[1] == path]
    assert len(matching) == 1 and words in matching[0], matching


def test_the_valid_file_among_broken_ones_loads_on_its_own(tmp_path: Path) -> None:
    (tmp_path / "d_valid.yaml").write_text((BAD / "d_valid.yaml").read_text())
    [world] = load_worlds(tmp_path)
    assert world.name == "probe_world" and world.source == str(tmp_path / "d_valid.yaml")
    assert expand(world, 0, 0).state["user"] == {"name": "Ada Obi"}


def test_a_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "oops.yaml").write_text("world: x\nstate:\n  user: {name: Ada\n  trust_level: guest\n")
    with pytest.raises(SeedError) as info:
        load_worlds(tmp_path)
    [problem] = info.value.problems
    assert problem.startswith(f"{tmp_path / 'oops.yaml'}: line 4, column ")
    assert "YAML syntax error" in problem and "started at line 3" in problem


def test_a_missing_or_empty_folder_is_a_seed_error(tmp_path: Path) -> None:
    with pytest.raises(SeedError, match="not a folder"):
        load_worlds(tmp_path / "nope")
    with pytest.raises(SeedError, match=r"no \*\.yaml state templates"):
        load_worlds(tmp_path)


def test_validate_template_on_a_non_mapping_and_on_an_empty_mapping() -> None:
    assert validate_template([1, 2], "x.yaml") == [  # type: ignore[arg-type]
        "x.yaml: (top): expected a mapping with keys world, domain, description, trust_levels, actions, "
        "secrets, askable, benign_requests, pools, state, got list"
    ]
    missing = [p.split(": ")[1] for p in validate_template({}, "x.yaml")]
    assert missing == [k for k in TOP_KEYS if k != "pools"]


def test_validate_template_accepts_every_shipped_world_file() -> None:
    for path in sorted(SEEDS.glob("*.yaml")):
        assert validate_template(yaml.safe_load(path.read_text()), str(path)) == []


def test_generators_cannot_hide_in_literal_keys() -> None:
    data = yaml.safe_load((BAD / "d_valid.yaml").read_text())
    data["state"]["user"]["prefs"] = {"$colour": "blue", "theme": "dark"}
    assert [p.split(": ")[1] for p in validate_template(data, "x.yaml")] == ["state.user.prefs.$colour"]


def test_optional_list_items_are_rejected_with_their_path() -> None:
    data = yaml.safe_load((BAD / "d_valid.yaml").read_text())
    data["state"]["items"] = {"$list": {"min": 1, "max": 2, "item": {"$optional": 0.5, "$value": 1}}}
    problems = validate_template(data, "x.yaml")
    assert [p.split(": ")[1] for p in problems] == ["state.items.$list.item.$optional"]
    assert "$optional must be the value of a mapping key" in problems[0]


def test_pattern_placeholders_cover_digits_and_letters() -> None:
    data = yaml.safe_load((BAD / "d_valid.yaml").read_text())
    data["state"]["secrets"]["code"] = {"$pattern": "##-@@-%%"}
    world = build_world(data, "x.yaml")
    code = expand(world, 0, 0).state["secrets"]["code"]
    assert code[2] == "-" and code[5] == "-"
    assert set(code[:2]) <= set(string.digits) and set(code[3:5]) <= set(string.ascii_uppercase)
    assert set(code[6:]) <= set(string.ascii_lowercase)
