"""Every subcommand's --help, as a person reads it: each option and argument says what it is for."""

from __future__ import annotations

import argparse

import pytest

from evalkit.cli.app import build_parser, main


def subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) for every subcommand, nested ones (`models get`) included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from subcommands(sub, (*path, name))


COMMANDS = sorted(words for words, _ in subcommands(build_parser()))


def test_the_walk_finds_every_subcommand():
    """The list is read from the parser; these are the commands the README documents, so a walk that found
    fewer (a parser built another way) fails here rather than passing vacuously."""
    for words in [("init",), ("tasks",), ("show",), ("selftest",), ("run",), ("report",), ("rescore",),
                  ("compare",), ("gate",), ("export",), ("doctor",), ("models",), ("models", "get"),
                  ("models", "list"), ("finetune",), ("experiment",)]:
        assert words in COMMANDS


@pytest.mark.parametrize("words", COMMANDS, ids=" ".join)
def test_every_option_has_help_text(words, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*words, "--help"])
    assert stop.value.code == 0
    shown = capsys.readouterr().out
    parser = dict(subcommands(build_parser()))[words]
    missing = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = "/".join(action.option_strings) or action.dest
        if not action.help or action.help == argparse.SUPPRESS or not action.help.strip():
            missing.append(name)
        for option in action.option_strings:  # and --help shows it, with its text
            assert option in shown, f"evalkit {' '.join(words)} --help does not show {option}"
    assert not missing, f"evalkit {' '.join(words)}: no help text for {', '.join(missing)}"


def test_gate_with_model_takes_the_run_flags_it_needs():
    """`gate --model` evaluates like `run`: a served model's name, the requests in flight, the dtype."""
    args = build_parser().parse_args(["gate", "--model", "openai:http://127.0.0.1:1", "--model-name", "m",
                                      "--concurrency", "3", "--dtype", "bfloat16"])
    assert (args.model_name, args.concurrency, args.dtype) == ("m", 3, "bfloat16")


def test_a_bad_level_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["run", "--model", "oracle", "--level", "hard"])
    assert stop.value.code == 2 and "expected a level number or 'all', got 'hard'" in capsys.readouterr().err
