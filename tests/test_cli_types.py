"""Tests of the command line's number types (gamornet.cli._types)."""

import argparse

import pytest

from gamornet.cli import _types as _cli_types


@pytest.mark.parametrize("function, text, expected", [
    (_cli_types.positive_int, "3", 3), (_cli_types.non_negative_int, "0", 0),
    (_cli_types.positive_float, "2.5", 2.5), (_cli_types.number, "-1e-3", -0.001),
])  # fmt: skip
def test_numbers_are_parsed(function, text, expected):
    value = function(text)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("function, text, message", [
    (_cli_types.positive_int, "0", "expected a positive integer, got '0'"),
    (_cli_types.positive_int, "1.5", "expected a positive integer, got '1.5'"),
    (_cli_types.non_negative_int, "-1", "expected an integer >= 0, got '-1'"),
    (_cli_types.non_negative_int, "x", "expected an integer >= 0, got 'x'"),
    (_cli_types.positive_float, "0", "expected a positive number, got '0'"),
    (_cli_types.positive_float, "nan", "expected a positive number, got 'nan'"),
    (_cli_types.positive_float, "inf", "expected a positive number, got 'inf'"),
    (_cli_types.number, "one", "expected a number, got 'one'"),
])  # fmt: skip
def test_bad_numbers_are_refused_with_what_was_expected(function, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        function(text)


def test_argparse_reports_the_option(capsys):
    parser = argparse.ArgumentParser(prog="gamornet train")
    parser.add_argument("--epochs", type=_cli_types.positive_int)
    with pytest.raises(SystemExit):
        parser.parse_args(["--epochs", "0"])
    assert "argument --epochs: expected a positive integer, got '0'" in capsys.readouterr().err
