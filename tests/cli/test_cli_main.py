"""The dispatcher: expected failures become one-line messages with exit code 2, not tracebacks."""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path

import pytest

import mlattack
from mlattack import cli


def _parser_failing_with(error: BaseException) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlattack")
    subparsers = parser.add_subparsers(dest="command")

    def fail(args: argparse.Namespace) -> int:
        raise error

    subparsers.add_parser("boom").set_defaults(func=fail)
    return parser


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad value"),
        TypeError("bad type"),
        PermissionError("no access to /x"),
        ImportError("backbone 'timm:resnet18' needs timm; install the optional model zoo"),
        ModuleNotFoundError("No module named 'timm'", name="timm"),
    ],
)
def test_expected_errors_exit_2_with_a_message(
    error: Exception, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "build_parser", lambda: _parser_failing_with(error))
    assert cli.main(["boom"]) == 2
    assert capsys.readouterr().err == f"mlattack boom: error: {error}\n"


def test_programming_errors_are_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "build_parser", lambda: _parser_failing_with(KeyError("bug")))
    with pytest.raises(KeyError):
        cli.main(["boom"])
    broken = ImportError("cannot import name 'x'", name="mlattack.attacks")
    monkeypatch.setattr(cli, "build_parser", lambda: _parser_failing_with(broken))
    with pytest.raises(ImportError):
        cli.main(["boom"])


def test_a_timm_backbone_without_timm_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    if importlib.util.find_spec("timm") is not None:
        pytest.skip("timm is installed")
    argv = ["train", "--model", "small-cnn", "--backbone", "timm:resnet18"]
    argv += ["--dataset", "synthetic", "--n-train", "8", "--n-val", "4", "--epochs", "1"]
    argv += ["--out", str(tmp_path / "model.pt")]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [
        "mlattack train: error: backbone 'timm:resnet18' needs timm; install the optional "
        "model zoo: pip install 'mlattack[zoo]'"
    ]


def test_every_subcommand_is_registered() -> None:
    help_text = cli.build_parser().format_help()
    for name in cli.SUBCOMMANDS:
        assert name in help_text


def test_ctrl_c_while_starting_up_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted() -> argparse.ArgumentParser:
        raise KeyboardInterrupt  # e.g. while torch is being imported

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["run", "x.yaml"]) == 130
    assert capsys.readouterr().err.strip() == "mlattack: interrupted"
    monkeypatch.setattr(cli, "build_parser", lambda: _parser_failing_with(KeyboardInterrupt()))
    assert cli.main(["boom"]) == 130
    assert capsys.readouterr().err.strip() == "mlattack boom: interrupted"


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"mlattack {mlattack.__version__}\n"


def test_the_version_is_written_in_one_place() -> None:
    root = Path(__file__).resolve().parents[2]
    pyproject = (root / "pyproject.toml").read_text("utf-8")
    # no literal version anywhere in pyproject.toml: setuptools reads mlattack.__version__
    assert re.findall(r"(?m)^version\s*=.*$", pyproject) == [
        'version = { attr = "mlattack.__version__" }'
    ]
    assert '\ndynamic = ["version"]\n' in pyproject
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+)?", mlattack.__version__)
    changelog = (root / "CHANGELOG.md").read_text("utf-8")
    assert f"## [{mlattack.__version__}]" in changelog


_WARNING_SCRIPT = """
import argparse, sys, warnings
import mlattack.cli as cli

def warn_twice(args):
    warnings.warn("first\\nsecond line", RuntimeWarning, stacklevel=1)
    warnings.warn("another", UserWarning, stacklevel=1)
    return 0

parser = cli.build_parser()
parse = parser.parse_args
parser.parse_args = lambda argv: argparse.Namespace(**{**vars(parse(argv)), "func": warn_twice})
cli.build_parser = lambda: parser
code = cli.main(["report", "somewhere"])
warnings.warn("after main", UserWarning, stacklevel=1)
sys.exit(code)
"""


def test_warnings_are_one_line_each_without_a_source_line() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _WARNING_SCRIPT], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[:2] == [
        "mlattack report: warning: first second line",
        "mlattack report: warning: another",
    ]
    assert "after main" in lines[2] and "UserWarning" in lines[2]  # Python's format restored
