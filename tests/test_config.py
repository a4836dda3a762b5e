"""The configuration is declared once (``config.py`` with ``settings.setting``): the reader, its errors,
the defaults and docs/configuration.md all follow from the declarations. These tests walk every declared
key, so a key added tomorrow is covered without a new test."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import tomllib
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from autoresearch import config as config_mod
from autoresearch import settings
from autoresearch.errors import UserError
from autoresearch.settings import setting
from autoresearch.vocab import DecisionRule, Direction, ExecutorKind

REPO = Path(__file__).resolve().parents[1]
OK_METRIC = {"metric": {"source": "json", "key": "loss"}}

ALL_KEYS = [(name, key) for name, cls in config_mod.SECTIONS.items() for key in settings.keys(cls)]
IDS = [f"{name}.{key.name}" for name, key in ALL_KEYS]


def _parse(tmp_path: Path, **sections) -> config_mod.Config:
    data = {**OK_METRIC, **sections}
    if "metric" in sections:
        data["metric"] = {**OK_METRIC["metric"], **sections["metric"]}
    return config_mod.parse(tmp_path, data)


def _error(tmp_path: Path, section: str, key: str, value) -> str:
    with pytest.raises(UserError) as info:
        _parse(tmp_path, **{section: {key: value}})
    return str(info.value)


def _wrong_type(key: settings.Key):
    """A TOML value of another type than the key's."""
    if key.kind.choices:
        return "no-such-choice"
    return {"string": 1, "boolean": "yes", "integer": 1.5, "number": "x", "list of strings": ["a", 1],
            "table of numbers": [1]}[key.type_name]


def test_every_section_field_is_declared_and_the_defaults_are_the_declarations():
    for name, cls in config_mod.SECTIONS.items():
        declared = {k.name: k.default for k in settings.keys(cls)}
        assert declared == {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)}, name
        assert all(k.setting.help for k in settings.keys(cls)), f"[{name}] has a key without help"


def test_an_empty_file_reads_as_the_declared_defaults(tmp_path):
    config = _parse(tmp_path)
    for name, cls in config_mod.SECTIONS.items():
        expected = cls() if name != "metric" else dataclasses.replace(cls(), source="json", key="loss")
        assert getattr(config, name) == expected, name


@pytest.mark.parametrize("name, key", ALL_KEYS, ids=IDS)
def test_a_value_of_the_wrong_type_or_not_a_choice_names_the_file_section_and_key(tmp_path, name, key):
    message = _error(tmp_path, name, key.name, _wrong_type(key))
    assert f"autoresearch.toml: [{name}] {key.name} " in message
    assert "must be" in message


BOUNDED = [(n, k) for n, k in ALL_KEYS if k.setting.min is not None or k.setting.max is not None]


@pytest.mark.parametrize("name, key", BOUNDED, ids=[f"{n}.{k.name}" for n, k in BOUNDED])
def test_a_value_out_of_bounds_names_the_key_and_the_bound(tmp_path, name, key):
    s = key.setting
    outside = []
    if s.min is not None:
        outside.append(s.min if s.exclusive_min else s.min - 1)
    if s.max is not None:
        outside.append(s.max if s.exclusive_max else s.max + 1)
    for value in outside:
        value = int(value) if key.type_name == "integer" else float(value)
        message = _error(tmp_path, name, key.name, value)
        assert f"[{name}] {key.name} must be {s.bounds_text()}" in message, message
        assert repr(value) in message


def test_values_are_converted_to_the_declared_type(tmp_path):
    config = _parse(tmp_path, run={"time_budget_s": 5, "timeout_s": 9, "command": ["python", "t.py"]},
                    metric={"direction": "maximize"}, decision={"rule": "greedy"},
                    resources={"executor": "ray", "custom": {"a100": 1}})
    assert config.run.time_budget_s == 5.0 and isinstance(config.run.time_budget_s, float)
    assert config.run.command == ("python", "t.py")
    assert config.metric.direction is Direction.MAXIMIZE
    assert config.decision.rule is DecisionRule.GREEDY and config.decision.rule == "greedy"
    assert config.resources.executor is ExecutorKind.RAY and config.resources.executor == "ray"
    assert config.resources.custom == (("a100", 1.0),)


def test_the_closed_sets_keep_their_string_names():
    assert config_mod.DECISION_RULES == ("sequential", "noise", "greedy")
    assert config_mod.EXECUTORS == ("local", "ray")
    assert config_mod.DecisionSection(rule="greedy").rule == DecisionRule.GREEDY


@pytest.mark.parametrize("name", list(config_mod.SECTIONS))
def test_an_unknown_key_is_an_error_listing_the_known_ones(tmp_path, name):
    message = _error(tmp_path, name, "no_such_key", 1)
    assert f"[{name}] no_such_key is not a known key" in message
    assert ", ".join(sorted(k.name for k in settings.keys(config_mod.SECTIONS[name]))) in message


def test_an_unknown_section_lists_the_known_ones(tmp_path):
    with pytest.raises(UserError, match=r"\[bogus\] is not a known section \(known: abort, agent, .*search_space"):
        config_mod.parse(tmp_path, {**OK_METRIC, "bogus": {}})


def test_a_section_that_is_not_a_table_names_itself(tmp_path):
    with pytest.raises(UserError, match=r"\[run\] must be a table"):
        config_mod.parse(tmp_path, {**OK_METRIC, "run": 3})


@pytest.mark.parametrize("sections, words", [
    ({"run": {"time_budget_s": 10, "timeout_s": 5}}, "[run] timeout_s (5.0) must be at least time_budget_s"),
    ({"run": {"command": []}}, "[run] command must not be empty"),
    ({"task": {"editable": []}}, "[task] editable must name at least one file"),
    ({"metric": {"source": "regex", "pattern": "("}}, "[metric] pattern is not a valid regular expression"),
    ({"resources": {"gpu_ids": ["0"]}}, "[resources] gpu_ids is set but gpus"),
    ({"resources": {"gpu_ids": ["0"], "gpus": 2}}, "[resources] gpus (2) is more than the 1 GPUs"),
    ({"abort": {"key": "a b"}}, "[abort] key must be the name a progress line gives"),
    ({"abort": {"ratio": 1}}, "[abort] ratio must be above 1 (1 would abort every run worse"),
    ({"contention": {"pause_s": 10, "pause_max_s": 5}}, "[contention] pause_max_s (5) must be at least pause_s"),
])
def test_rules_across_keys_still_name_their_key(tmp_path, sections, words):
    with pytest.raises(UserError) as info:
        _parse(tmp_path, **sections)
    assert words in str(info.value)


def test_a_relative_prices_file_is_read_from_the_repository(tmp_path):
    assert _parse(tmp_path, agent={"prices": "p.toml"}).agent.prices == str(tmp_path / "p.toml")
    assert _parse(tmp_path, agent={"prices": "/abs/p.toml"}).agent.prices == "/abs/p.toml"


def test_the_reference_page_is_up_to_date():
    """docs/configuration.md is generated; run `python scripts/config_docs.py` after changing a key."""
    page = REPO / "docs" / "configuration.md"
    assert page.read_text(encoding="utf-8") == config_mod.reference(), \
        "docs/configuration.md is out of date: run `python scripts/config_docs.py`"
    for name, key in ALL_KEYS:
        assert f"| `{key.name}` |" in page.read_text(encoding="utf-8"), f"{name}.{key.name}"


def _toml_examples():
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for block in re.findall(r"```toml\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
            data = tomllib.loads(block)
            if set(data) <= {*config_mod.SECTIONS, "search_space"}:   # not a prices or queue file
                yield pytest.param(data, id=f"{page.name}:{'+'.join(data)}")


@pytest.mark.parametrize("data", list(_toml_examples()))
def test_the_examples_in_the_docs_use_keys_that_exist(tmp_path, data):
    config_mod.parse(tmp_path, {**OK_METRIC, **data} if "metric" not in data else data)


def test_the_docs_script_checks_the_page():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "config_docs.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_field_without_a_declaration_or_with_bounds_on_a_string_is_refused():
    @dataclass(frozen=True)
    class Bare:
        n: int = 1

    @dataclass(frozen=True)
    class Bounded:
        s: str = setting("a", "a string", at_least=0)

    @dataclass(frozen=True)
    class Listy:
        x: list = setting((), "a list")

    for cls, words in [(Bare, "not declared with setting"), (Bounded, "bounds need an int or float"),
                       (Listy, "no reader for the type")]:
        with pytest.raises(TypeError, match=words):
            settings.keys(cls)
    with pytest.raises(TypeError, match="immutable"):
        setting([], "a list")
