"""Help and usage: examples that parse, one meaning of --quiet, short usage errors, the Ctrl-C hint."""

from __future__ import annotations

import shlex

import pytest

from pfv_onnx.cli import COMMANDS, build_parser, main
from pfv_onnx.cli._help import EXAMPLES


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_shows_examples_that_parse(command, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "examples:" in text
    examples = EXAMPLES[command]
    assert examples
    parser = build_parser()
    for line, _ in examples:
        assert line in text
        args = parser.parse_args(shlex.split(line)[1:])  # exits (SystemExit) if an example is wrong
        assert args.command == shlex.split(line)[1]


def test_quiet_means_one_thing(capsys):
    meanings = set()
    for command in COMMANDS:
        assert main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        if "-q, --quiet" not in text:
            continue
        meaning = text.split("-q, --quiet ", 1)[1].split(" summary", 1)[0] + " summary"
        meanings.add(meaning)
    assert meanings == {"print only errors on stderr: no preamble, warnings (report.json keeps them), progress bar or summary"}


def test_usage_error_is_short(capsys):
    assert main(["run", "model.onnx", "x.jpg", "-o", "out", "--k", "zero"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["pfv-onnx run: error: argument --k: expected a whole number, got 'zero'", "see 'pfv-onnx run --help'"]
    assert main(["frobnicate"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[1] == "see 'pfv-onnx --help'" and "invalid choice: 'frobnicate'" in lines[0]


def test_interrupted_run_says_how_to_resume(monkeypatch, capsys):
    from pfv_onnx.cli import cmd_inspect, cmd_run

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cmd_run, "run", interrupted)
    monkeypatch.setattr(cmd_inspect, "run", interrupted)
    assert main(["run", "m.onnx", "x.jpg", "-o", "out"]) == 130
    assert capsys.readouterr().err.strip() == "pfv-onnx run: interrupted; run the same command again to resume: finished groups are kept"
    assert main(["inspect", "m.onnx"]) == 130
    assert capsys.readouterr().err.strip() == "pfv-onnx inspect: interrupted"


@pytest.mark.parametrize("command", COMMANDS)
def test_options_are_grouped(command, capsys):
    """Under the generic "options:" heading only -h and --debug remain; every other option sits in a named group."""
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    generic = text.split("\noptions:\n", 1)[1].split("\n\n", 1)[0] if "\noptions:\n" in text else ""
    flags = [ln.split()[0].rstrip(",") for ln in generic.splitlines() if ln.startswith("  -")]
    assert set(flags) <= {"-h", "--debug"}, flags
