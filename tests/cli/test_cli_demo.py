"""`mlattack demo`: its reduced run end to end, its bad options, and its report in a browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlattack.cli import main

pytestmark = pytest.mark.slow  # runs the reduced demo once (about 30 s)

ATTACKS = ("mla-u", "mla-c", "gmla")


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One reduced demo run (both parts) shared by the tests that read its output."""
    pytest.importorskip("efficientnet_lite_pytorch")
    out = tmp_path_factory.mktemp("demo")
    result = subprocess.run(
        [sys.executable, "-m", "mlattack", "demo", "--quick", "--no-progress", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return out, result.stdout


@pytest.mark.slow
def test_quick_demo_runs_both_parts_and_prints_a_table_per_part(
    quick_demo: tuple[Path, str],
) -> None:
    out, stdout = quick_demo
    pages = {
        part: (out / part / "report" / "report.html").resolve() for part in ("photos", "synthetic")
    }
    for part, page in pages.items():
        assert page.stat().st_size > 0
        assert str(page) in stdout
        other = "synthetic" if part == "photos" else "photos"
        link = f"href='../../{other}/report/report.html'"  # relative: the folders can move
        assert link in page.read_text(encoding="utf-8"), part
    # one row per attack, ε and |Ω|: the photos at |Ω| = 1, the synthetic scenes at 1 and 2
    rows = re.findall(r"^(mla-u|mla-c|gmla)\s+(\S+)\s+(\d)\s+\d+\s+\d+", stdout, re.MULTILINE)
    assert {name for name, _, _ in rows} == set(ATTACKS)
    assert {size for _, _, size in rows} == {"1", "2"}
    assert "4/255" in {eps for _, eps, _ in rows}
    figures = json.loads((out / "synthetic" / "report" / "report.json").read_text())["figures"]
    assert figures["Fig. 6 — metrics vs |Ω|"] is not None
    figures = json.loads((out / "photos" / "report" / "report.json").read_text())["figures"]
    assert figures["Fig. 7 — transferability"] is not None


@pytest.mark.slow
def test_report_renders_in_headless_chromium_without_console_errors(
    quick_demo: tuple[Path, str], tmp_path: Path
) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (setup.sh installs it under CI=true)")
    out, _ = quick_demo
    for part in ("photos", "synthetic"):
        page = (out / part / "report" / "report.html").read_text(encoding="utf-8")
        # The page as written, plus a probe that records script errors and, once loaded, how
        # many images decoded; the probe's verdict lands in the DOM that chromium prints.
        probe = (
            "<script>window.__errors=[];addEventListener('error',e=>__errors.push(String("
            "e.message||e.target&&e.target.src)),true);addEventListener('load',()=>{const i="
            "[...document.images];document.body.insertAdjacentHTML('beforeend','<pre id=probe>'"
            "+JSON.stringify({images:i.length,decoded:i.filter(x=>x.complete&&x.naturalWidth>0)"
            ".length,errors:__errors})+'</pre>')});</script>"
        )
        probed = tmp_path / f"{part}.html"
        probed.write_text(page.replace("<head>", "<head>" + probe, 1), encoding="utf-8")
        result = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
             "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        found = re.search(r"<pre id=\"probe\">(.*?)</pre>", result.stdout)
        assert found, result.stderr[-2000:]
        verdict = json.loads(found.group(1).replace("&quot;", '"'))
        drawn = [name for name, file in _figures(out, part).items() if file]
        assert verdict["errors"] == [], part
        assert verdict["images"] == verdict["decoded"] == len(drawn), part
        assert "Uncaught" not in result.stderr and ":ERROR:CONSOLE" not in result.stderr


def _figures(out: Path, part: str) -> dict[str, str | None]:
    report = json.loads((out / part / "report" / "report.json").read_text(encoding="utf-8"))
    figures: dict[str, str | None] = report["figures"]
    return figures


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--eps", "0"),
        ("--eps", "1.5"),
        ("--eps", "nan"),
        ("--synthetic-eps", "-0.1"),
        ("--steps", "0"),
    ],
)
def test_bad_demo_options_give_one_line_and_exit_2(
    option: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", option, value, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert option in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # refused before any work


def test_unwritable_out_gives_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    assert main(["demo", "--out", str(blocker / "demo")]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and len(err.strip().splitlines()) == 1
