"""The prose against the code: the README's option tables, the warnings page, the names the docs cite,
every code block of the README and docs (run, or skipped by an explicit marker), and the site build.

A code block is skipped only by an HTML comment on the line before its fence:
``<!-- docs-test: skip: <why> -->``. ``text`` blocks are output and are not run; ``yaml`` blocks are
configs and are validated by :meth:`ExperimentConfig.from_yaml`.
"""

from __future__ import annotations

import ast
import functools
import http.server
import importlib
import inspect
import json
import os
import re
import shutil
import socketserver
import subprocess
import sys
import threading
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

import mlattack.attacks
from mlattack.attacks import Attack

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP_MARKER = re.compile(r"<!-- docs-test: skip: (.+?) -->")
RUN_LANGUAGES = {"python", "bash", "yaml"}
SHOWN_LANGUAGES = {"text"}


class CodeBlock(NamedTuple):
    page: str
    line: int
    language: str
    code: str
    skip_reason: str | None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def code_blocks(path: Path) -> list[CodeBlock]:
    """Fenced blocks, also indented ones (inside list items), with their skip marker if any."""
    lines = path.read_text("utf-8").splitlines()
    blocks = []
    number = 0
    while number < len(lines):
        opening = re.match(r"^(\s*)```(\S*)\s*$", lines[number])
        if not opening:
            number += 1
            continue
        indent = opening.group(1)
        end = next(i for i in range(number + 1, len(lines)) if lines[i].strip().startswith("```"))
        marker = SKIP_MARKER.search(lines[number - 1]) if number else None
        code = "\n".join(line.removeprefix(indent) for line in lines[number + 1 : end]) + "\n"
        blocks.append(
            CodeBlock(
                str(path.relative_to(ROOT)),
                number + 1,
                opening.group(2),
                code,
                marker.group(1) if marker else None,
            )
        )
        number = end + 1
    return blocks


ALL_BLOCKS = [block for page in PAGES for block in code_blocks(page)]


# ------------------------------------------------------------------ the README's option tables


def _options(cell: str) -> list[tuple[str, list[str]]]:
    """``name`` / ``name=value`` / ``name="a"|"b"`` items of a table cell or sentence."""
    items = []
    for text in re.findall(r"`([a-z_]+(?:=[^`]*)?)`", cell.replace("\\|", "|")):
        name, _, values = text.partition("=")
        items.append((name, values.split("|") if values else []))
    return items


def _resolve(annotation: Any, namespace: dict[str, Any]) -> Any:
    """A string annotation evaluated in its module (None where it names a type-checking-only
    import: only ``Literal`` options are compared)."""
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, dict(namespace))
    except NameError:
        return None


def _parameters(cls: type) -> dict[str, tuple[inspect.Parameter, Any]]:
    """Constructor parameters along the MRO (options travel as ``**options`` to the base), with
    their resolved type hints; the most derived definition wins."""
    found: dict[str, tuple[inspect.Parameter, Any]] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        namespace = vars(sys.modules[init.__module__])
        for name, parameter in list(inspect.signature(init).parameters.items())[1:]:
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                found[name] = (parameter, _resolve(parameter.annotation, namespace))
    return found


def _allowed(hint: Any) -> set[Any]:
    """The values a ``Literal`` (possibly ``| None``) allows."""
    values: set[Any] = set()
    for arg in typing.get_args(hint) or ():
        if arg is type(None):
            values.add(None)
        elif typing.get_origin(arg) is typing.Literal:
            values.update(typing.get_args(arg))
        else:
            values.add(arg)
    return values


def _check_option(cls: type, name: str, values: list[str]) -> None:
    parameters = _parameters(cls)
    assert name in parameters, f"README names {cls.__name__}({name}=...), which it does not take"
    parameter, hint = parameters[name]
    parsed = [ast.literal_eval(value) for value in values]
    if len(parsed) == 1 and parameter.default is None and isinstance(parsed[0], str):
        # a value to choose (``preset="official"``), not a default
        allowed = _allowed(hint)
        assert parsed[0] in allowed or str in allowed, (cls.__name__, name, hint)
    elif len(parsed) == 1:
        assert parameter.default == parsed[0], (cls.__name__, name, parameter.default)
    elif parsed:
        allowed = _allowed(hint)
        if None not in parsed:  # None: "chosen by the preset", not a value one writes
            allowed.discard(None)
        assert set(parsed) == allowed, (cls.__name__, name, hint)
        if parameter.default is not None or None in parsed:
            assert parsed[0] == parameter.default, (cls.__name__, name, "the first is the default")


def _readme_section(start: str, stop: str) -> str:
    text = (ROOT / "README.md").read_text("utf-8")
    return text[text.index(start) : text.index(stop, text.index(start))]


def test_the_readme_attack_table_matches_the_signatures() -> None:
    table = _readme_section("| attack | what it does (paper) | notable options |", "\n\n")
    rows = [line for line in table.splitlines()[2:] if line.startswith("| `")]
    assert len(rows) >= 5
    for row in rows:
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]]
        cls = getattr(mlattack.attacks, cells[0].strip("`"))
        assert issubclass(cls, Attack)
        for name, values in _options(cells[2]):
            _check_option(cls, name, values)


def test_the_readme_lists_every_option_every_attack_takes_with_its_default() -> None:
    sentence = _readme_section("All take `eps=0.01`", ", and return an")
    listed = _options(sentence)
    for name, values in listed:
        _check_option(Attack, name, values)
    assert [name for name, _ in listed] == [n for n in _parameters(Attack) if n != "model"]


# ------------------------------------------------------------------ warnings, names, citations


def _emitted_warnings() -> list[tuple[str, list[str]]]:
    """``(where, constant parts of the message)`` of every ``warnings.warn`` in the package."""
    found = []
    for path in sorted((ROOT / "src" / "mlattack").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "warn"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "warnings"
            ):
                message = node.args[0]
                parts = message.values if isinstance(message, ast.JoinedStr) else [message]
                constants = [p.value for p in parts if isinstance(p, ast.Constant)]
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                found.append((where, [c.strip() for c in constants if len(c.strip()) >= 8]))
    return found


def test_the_warnings_page_quotes_every_warning_the_library_emits() -> None:
    page = (ROOT / "docs" / "warnings.md").read_text("utf-8")
    emitted = _emitted_warnings()
    assert len(emitted) >= 9
    for where, parts in emitted:
        assert parts, where
        missing = [part for part in parts if part not in page]
        assert missing == [], f"{where}: docs/warnings.md does not quote {missing}"


def test_no_text_cites_a_document_the_repository_does_not_hold() -> None:
    cited = re.compile(r"\b([A-Za-z][\w-]*\.md)\b")
    held = {path.name for path in ROOT.rglob("*.md") if ".git" not in path.parts}
    held.add("adding-an-attack.md")  # written on the attack-registry branch
    offenders = []
    for folder in ("src", "tests", "docs", "benchmarks", "scripts"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in {".py", ".md"} and "reference_data" not in path.parts:
                for name in cited.findall(path.read_text("utf-8")):
                    if name not in held:
                        offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []


def _dotted_names() -> set[str]:
    names: set[str] = set()
    for page in PAGES:
        names.update(re.findall(r"`(mlattack(?:\.\w+)+)`", page.read_text("utf-8")))
    return names


@pytest.mark.parametrize("name", sorted(_dotted_names()))
def test_every_dotted_name_the_docs_cite_exists(name: str) -> None:
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            target = getattr(target, attribute)
        return
    pytest.fail(f"{name} cannot be imported")


# ------------------------------------------------------------------ code blocks


def test_every_code_block_is_run_validated_or_skipped_with_a_reason() -> None:
    for block in ALL_BLOCKS:
        assert block.language in RUN_LANGUAGES | SHOWN_LANGUAGES, (
            f"{block.id}: a ```{block.language or '(no language)'} block: name its language"
        )
        if block.skip_reason is not None:
            assert block.language in RUN_LANGUAGES and len(block.skip_reason) > 20, block.id


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch folder where the blocks' relative paths (configs/, tests/...) resolve."""
    folder = tmp_path_factory.mktemp("docs-blocks")
    for name in ("configs", "tests"):
        (folder / name).symlink_to(ROOT / name)
    return folder


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    env["MPLBACKEND"] = "Agg"
    return env


RUNNABLE = [block for block in ALL_BLOCKS if block.language in RUN_LANGUAGES]


@pytest.mark.slow
@pytest.mark.timeout(900)  # the README's library example attacks a real model: slow on a busy CPU
@pytest.mark.parametrize("block", RUNNABLE, ids=[block.id for block in RUNNABLE])
def test_code_block_runs(block: CodeBlock, workdir: Path) -> None:
    if block.skip_reason is not None:
        pytest.skip(f"marked in {block.page}: {block.skip_reason}")
    if block.language == "yaml":
        from mlattack.experiments import ExperimentConfig

        config = workdir / f"block-{block.line}.yaml"
        config.write_text(block.code, encoding="utf-8")
        ExperimentConfig.from_yaml(config)
        return
    command = [sys.executable, "-c", block.code]
    if block.language == "bash":
        command = ["bash", "-euo", "pipefail", "-c", block.code]
    result = subprocess.run(
        command, cwd=workdir, env=_environment(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{block.id}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


# ------------------------------------------------------------------ the site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env={**_environment(), "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    assert "WARNING" not in result.stderr, result.stderr[-5000:]
    return out


@pytest.mark.slow
def test_the_site_builds_with_every_page_and_the_api_reference(site: Path) -> None:
    for page in ("semantics", "experiments", "warnings", "paper-map"):
        assert (site / page / "index.html").is_file(), page
    attacks = (site / "api" / "attacks" / "index.html").read_text("utf-8")
    # generated from the docstrings: the classes and a sentence of GMLA's docstring
    for name in ("GMLA", "MLAU", "MLAC", "MLDP", "MLALP", "AttackResult"):
        assert name in attacks
    first_line = inspect.getdoc(mlattack.attacks.GMLA)
    assert first_line is not None and first_line.split("\n")[0][:40] in attacks


# The probe records uncaught errors, failed resource loads, rejected promises and console.error
# calls; once the page has loaded it writes them into the DOM that Chromium prints.
PROBE = (
    "<script>window.__problems=[];"
    "addEventListener('error',e=>__problems.push('error: '+String(e.message||"
    "(e.target&&(e.target.src||e.target.href)))),true);"
    "addEventListener('unhandledrejection',e=>__problems.push('rejection: '+String(e.reason)));"
    "const __error=console.error;console.error=(...a)=>{__problems.push('console: '+a.join(' '));"
    "__error(...a)};"
    "addEventListener('load',()=>setTimeout(()=>document.body.insertAdjacentHTML('beforeend',"
    "'<pre id=probe>'+JSON.stringify(__problems)+'</pre>'),500));</script>"
)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def served_site(site: Path) -> Iterator[str]:
    """The built site with the probe in every page, served over HTTP on localhost (the search
    index is fetched, which file:// URLs do not allow)."""
    for page in site.rglob("*.html"):
        html = page.read_text("utf-8")
        page.write_text(html.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    handler = functools.partial(_QuietHandler, directory=str(site))
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/"
        finally:
            server.shutdown()


RENDERED_PAGES = ["", "semantics/", "experiments/", "warnings/", "paper-map/", "api/attacks/"]


@pytest.mark.slow
@pytest.mark.parametrize("page", RENDERED_PAGES)
def test_the_site_renders_in_headless_chromium_without_console_errors(
    served_site: str, page: str
) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        # Chromium is a Debian package, not a Python one: setup.sh installs it under CI=true.
        pytest.skip("chromium is not installed (setup.sh installs it under CI=true)")
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-extensions", "--no-first-run", "--enable-logging=stderr",
         "--virtual-time-budget=5000", "--dump-dom", served_site + page],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    found = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert found, result.stderr[-3000:]
    problems = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert problems == [], page
    assert ":ERROR:CONSOLE" not in result.stderr, result.stderr[-3000:]
