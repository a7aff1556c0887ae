"""The `soundmind` command as a newcomer meets it: argument errors in our words, and a help text with
its default for every option of every sub-command (its --version: test_version.py)."""

from __future__ import annotations

import argparse

import pytest

from soundmind.cli import build_parser, main
from soundmind.errors import EXIT_CONFIG, EXIT_USAGE
from soundmind.train import contract


def _parsers(parser: argparse.ArgumentParser, path: str = "soundmind"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, f"{path} {name}")


def test_every_option_has_help_with_its_default():
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction):
                continue
            text = parser._get_formatter()._expand_help(action) if action.help else ""
            assert text, f"{path} {action.option_strings or action.dest}: no help"
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                assert "default" in text, f"{path} {action.option_strings}: help does not give the default"


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "synth", "--out", "x", "--limit", "zero"],
        ["data", "synth", "--out", "x", "--limit", "0"],
        ["data", "prepare", "--data-dir", "d", "--out", "o", "--modality", "text", "--workers", "-1"],
        ["eval", "--endpoint", "http://h", "--model", "m", "--data", "d", "--timeout", "0"],
        ["eval", "--endpoint", "http://h", "--model", "m", "--data", "d", "--timeout", "nan"],
        ["eval", "--endpoint", "http://h", "--model", "m", "--data", "d", "--backoff", "-1"],
        ["eval", "--endpoint", "http://h", "--model", "m", "--data", "d", "--concurrency", "1.5"],
        ["train", "--join-timeout", "-5"],
        ["train", "--ray-port", "70000"],
    ],
)
def test_bad_numbers_are_usage_errors_in_our_words(capsys, argv):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "must be" in err and "invalid" not in err and "_positive" not in err


def test_exit_codes_have_one_source():
    assert contract.EXIT_CONFIG_ERROR == EXIT_CONFIG
