""".ci/run: its steps, their order, the README's test command, exit statuses; the pre-commit mirror."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README_TEST_COMMAND = "bash setup.sh && python3 -m pytest -q"
FAST_LANE = 'python3 -m pytest -q -m "not slow"'


def ci_steps() -> list[list[str]]:
    text = (ROOT / ".ci" / "run").read_text("utf-8")
    return [
        shlex.split(line.removeprefix("step "))
        for line in text.splitlines()
        if line.startswith("step ")
    ]


def test_the_steps_run_checks_first_then_the_fast_lane_then_the_readme_command() -> None:
    steps = [shlex.join(step) for step in ci_steps()]
    assert steps[0] == "bash setup.sh"
    assert len(steps) == 7
    assert steps[1:4] == [
        "python3 -m ruff check src tests benchmarks scripts",
        "python3 -m ruff format --check src tests benchmarks scripts",
        "python3 -m mypy",
    ]
    assert steps[4] == "python3 -m mkdocs build --strict --quiet --site-dir site"
    assert steps[-2] == shlex.join(shlex.split(FAST_LANE))
    assert ci_steps()[-1] == ["bash", "-c", README_TEST_COMMAND]
    readme = (ROOT / "README.md").read_text("utf-8")
    assert f"\n{README_TEST_COMMAND} " in readme


def test_pre_commit_runs_the_same_commands_in_the_same_order() -> None:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text("utf-8"))
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    assert all(repo["repo"] == "local" for repo in config["repos"])
    assert [shlex.split(hook["entry"]) for hook in hooks] == ci_steps()[1:]
    assert all(hook["pass_filenames"] is False and hook["always_run"] for hook in hooks)


@pytest.fixture
def fake_checkout(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of .ci/run beside a stub setup.sh, with a stub python3 first on PATH: both log their
    arguments and exit with the status the test asks for."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / "setup.sh").write_text('echo "setup CI=$CI" >> "$LOG"; exit "${SETUP_STATUS:-0}"\n')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "python3"
    stub.write_text(
        "#!/usr/bin/env bash\n"
        'echo "$*" >> "$LOG"\n'
        'if [ "$*" = "${FAIL_ON:-}" ]; then exit "$FAIL_STATUS"; fi\n'
    )
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env["LOG"] = str(tmp_path / "log")
    env.pop("CI", None)
    return tmp_path, env


def run_ci(checkout: Path, env: dict[str, str], **extra: str) -> tuple[int, list[str]]:
    completed = subprocess.run(
        ["bash", str(checkout / ".ci" / "run")],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    log = checkout / "log"
    return completed.returncode, log.read_text().splitlines() if log.exists() else []


def test_every_step_runs_in_order_under_ci_true(fake_checkout: tuple[Path, dict[str, str]]) -> None:
    status, log = run_ci(*fake_checkout)
    assert status == 0
    assert log == [
        "setup CI=true",
        "-m ruff check src tests benchmarks scripts",
        "-m ruff format --check src tests benchmarks scripts",
        "-m mypy",
        "-m mkdocs build --strict --quiet --site-dir site",
        "-m pytest -q -m not slow",
        "setup CI=true",
        "-m pytest -q",
    ]


@pytest.mark.parametrize(
    ("failing", "status", "steps_run"),
    [
        ("-m ruff check src tests benchmarks scripts", 1, 2),
        ("-m mypy", 1, 4),
        ("-m mkdocs build --strict --quiet --site-dir site", 1, 5),
        ("-m pytest -q -m not slow", 5, 6),  # pytest's "no test collected" is a failure too
        ("-m pytest -q", 1, 8),
        ("-m pytest -q", 2, 8),
    ],
)
def test_a_failing_step_stops_the_run_with_its_status(
    fake_checkout: tuple[Path, dict[str, str]], failing: str, status: int, steps_run: int
) -> None:
    code, log = run_ci(*fake_checkout, FAIL_ON=failing, FAIL_STATUS=str(status))
    assert code == status
    assert len(log) == steps_run and log[-1] == failing


def test_a_failing_setup_stops_the_run(fake_checkout: tuple[Path, dict[str, str]]) -> None:
    code, log = run_ci(*fake_checkout, SETUP_STATUS="3")
    assert code == 3 and log == ["setup CI=true"]
