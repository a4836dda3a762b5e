"""AST rewriting of UPPER_CASE constants: exact spans, types kept, clear errors."""

import ast

import pytest

from autoresearch.hyperparams import (MISSING, UnknownConstant, describe_changes, diff_constants,
                                           read_constants, render_value, set_constants)

SOURCE = '''"""A train.py-like file."""  # héader with a non-ASCII char
import math

# --- hyperparameters -------------------------------------------------
LR = 3e-4               # learning rate
BATCH_SIZE = 48         # items per step
MAX_TEMPERATURE = 2.0   # clamp on the logit scale (the bug)
WEIGHT_DECAY: float = 1e-4   # annotated
NAME = "baseline"       # a string
USE_EXPERT = True
OFFSET = -3
SHAPE = (3,
         224)           # spans two lines
DERIVED = LR * 2        # not a literal: skipped
lowercase = 1           # not UPPER_CASE: skipped
A, B = 1, 2             # tuple target: skipped


def train():
    INNER = 5           # not top level: skipped
    return INNER
'''


def test_read_constants_finds_top_level_literals_only():
    assert read_constants(SOURCE) == {
        "LR": 3e-4, "BATCH_SIZE": 48, "MAX_TEMPERATURE": 2.0, "WEIGHT_DECAY": 1e-4, "NAME": "baseline",
        "USE_EXPERT": True, "OFFSET": -3, "SHAPE": (3, 224),
    }
    assert list(read_constants(SOURCE))[0] == "LR"   # file order


def test_set_constants_changes_only_the_value_spans():
    new = set_constants(SOURCE, {"LR": 1e-4, "MAX_TEMPERATURE": 100.0})
    old_lines, new_lines = SOURCE.splitlines(), new.splitlines()
    assert len(old_lines) == len(new_lines)
    changed = [(a, b) for a, b in zip(old_lines, new_lines) if a != b]
    assert changed == [
        ("LR = 3e-4               # learning rate", "LR = 0.0001               # learning rate"),
        ("MAX_TEMPERATURE = 2.0   # clamp on the logit scale (the bug)",
         "MAX_TEMPERATURE = 100.0   # clamp on the logit scale (the bug)"),
    ]
    assert read_constants(new)["LR"] == 1e-4


def test_round_trip_with_same_values_is_byte_identical_except_normalised_literals():
    same = set_constants(SOURCE, {"BATCH_SIZE": 48, "NAME": "baseline", "OFFSET": -3, "USE_EXPERT": True})
    assert same == SOURCE.replace('"baseline"', "'baseline'")


@pytest.mark.parametrize("name,value,text", [
    ("MAX_TEMPERATURE", 100, "100.0"),        # float stays float even when given an int
    ("BATCH_SIZE", 64, "64"),
    ("BATCH_SIZE", 64.0, "64"),               # an integral float for an int constant stays int
    ("LR", 2e-4, "0.0002"),
    ("LR", 1e-12, "1e-12"),
    ("OFFSET", -7, "-7"),
    ("NAME", "it's \"quoted\"", repr("it's \"quoted\"")),
    ("USE_EXPERT", False, "False"),
    ("SHAPE", (1, 2, 3), "(1, 2, 3)"),
    ("WEIGHT_DECAY", 0.05, "0.05"),
])
def test_values_keep_their_type(name, value, text):
    new = set_constants(SOURCE, {name: value})
    assert text in new
    got = read_constants(new)[name]
    assert type(got) is type(read_constants(SOURCE)[name])
    ast.parse(new)


def test_multiline_value_is_replaced_whole():
    new = set_constants(SOURCE, {"SHAPE": (1, 1)})
    assert "SHAPE = (1, 1)           # spans two lines" in new
    assert "224" not in new


def test_annotation_kept():
    new = set_constants(SOURCE, {"WEIGHT_DECAY": 0.01})
    assert "WEIGHT_DECAY: float = 0.01   # annotated" in new


def test_non_ascii_before_value_on_same_line():
    src = 'X = "é"; Y = 1.5  # ü\n'
    assert set_constants(src, {"Y": 2.5}) == 'X = "é"; Y = 2.5  # ü\n'


def test_crlf_line_endings_preserved():
    src = "A = 1\r\nB = 2.0  # c\r\n"
    assert set_constants(src, {"B": 3}) == "A = 1\r\nB = 3.0  # c\r\n"


def test_last_assignment_wins():
    src = "LR = 1.0\nLR = 2.0\n"
    assert read_constants(src) == {"LR": 2.0}
    assert set_constants(src, {"LR": 5.0}) == "LR = 1.0\nLR = 5.0\n"


def test_unknown_constant_names_the_known_ones():
    with pytest.raises(UnknownConstant) as info:
        set_constants(SOURCE, {"LRR": 1.0})
    assert isinstance(info.value, KeyError)
    assert "LRR" in str(info.value) and "LR, BATCH_SIZE" in str(info.value)
    with pytest.raises(UnknownConstant):
        set_constants(SOURCE, {"DERIVED": 1.0})


def test_values_without_a_literal_are_refused():
    with pytest.raises(ValueError):
        set_constants(SOURCE, {"LR": float("nan")})
    with pytest.raises(ValueError):
        render_value(object())


def test_diff_and_describe():
    new = set_constants(SOURCE, {"LR": 1e-4, "MAX_TEMPERATURE": 100})
    changes = diff_constants(SOURCE, new)
    assert changes == [("LR", 3e-4, 1e-4), ("MAX_TEMPERATURE", 2.0, 100.0)]
    assert describe_changes(changes) == "LR=0.0001 (was 0.0003), MAX_TEMPERATURE=100.0 (was 2.0)"


def test_diff_added_removed_and_type_change():
    old = "A = 1\nB = 2\nC = 'x'\n"
    new = "A = 1.0\nC = 'x'\nD = 4\n"
    changes = diff_constants(old, new)
    assert changes == [("A", 1, 1.0), ("D", MISSING, 4), ("B", 2, MISSING)]
    assert describe_changes(changes) == "A=1.0 (was 1), D=4 (added), B removed (was 2)"
    assert diff_constants(old, old) == []
