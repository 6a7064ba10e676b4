"""Every Python block of README.md and docs/*.md runs as written.

The convention the blocks follow is described in ``tests/support/docs.py``:
real servers on 127.0.0.1 reached through the environment (the policies'
``SAGE_RESILIENCE__...`` overrides, ``SILICONFLOW_API_KEY``,
``PGPASSWORD``, ``DATABASE_URL``), one namespace and one event loop per
block, and an HTML comment ``<!-- not-run: reason -->`` above a block that
cannot run. The blocks that do not run are counted page by page below.
"""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import shutil
from pathlib import Path

import griffe
import pytest
from sage_resilience import policy
from sage_resilience.postgres import connect_kwargs
from tests.support import docs
from tests.support.http_servers import StandInServer
from tests.support.openai_server import CHAT, completion, provider_error
from tests.support.pg import pgvector_cluster
from tests.test_exports import PUBLIC

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Per page: (blocks that run, blocks marked not-run). A page whose
#: Python blocks change must say so here: a block cannot stop running
#: without this table changing.
EXPECTED = {
    "README.md": (8, 1),
    "docs/configuration.md": (3, 0),
    "docs/diagnosis.md": (1, 0),
    "docs/fastapi.md": (1, 0),
    "docs/integrations.md": (7, 0),
    "docs/logs.md": (1, 0),
    "docs/monitoring.md": (0, 0),
    "docs/operations.md": (2, 1),
    "docs/storage.md": (0, 0),
    "docs/tripping.md": (1, 0),
}


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


BLOCKS = [block for page in PAGES for block in docs.blocks(page)]
RUNNABLE = [block for block in BLOCKS if block.not_run is None]


@pytest.fixture(scope="module")
def api():
    """The OpenAI-compatible API: chat answers, the models list is down."""
    with StandInServer() as server:
        server.script(CHAT, completion("Hello! How can I help?"))
        server.script("/v1/models", provider_error(503, "busy"))
        yield server


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    """PostgreSQL with the role and database ``sage`` and two tables."""
    with pgvector_cluster(tmp_path_factory.mktemp("pg")) as server:
        server.create_role("sage", password="docs-example")
        server.create_database("sage", owner="sage")
        server.psql(
            "CREATE TABLE memories (id int PRIMARY KEY, body text);"
            "CREATE TABLE memory_tags (memory_id int, tag text);"
            "ALTER TABLE memories OWNER TO sage;"
            "ALTER TABLE memory_tags OWNER TO sage;",
            database="sage",
        )
        yield server


@pytest.fixture
def environment(api, pg, monkeypatch, tmp_path):
    """The environment, working directory and empty tables of a block."""
    values = {
        "api": api.url,
        "pg_port": pg.port,
        "pg_password": "docs-example",
    }
    for name, template in docs.ENVIRONMENT.items():
        monkeypatch.setenv(name, template.format(**values))
    for name, source in docs.FILES.items():
        origin = DATA / source
        if origin.suffix == ".gz" and not name.endswith(".gz"):
            with (
                gzip.open(origin) as packed,
                (tmp_path / name).open("wb") as out,
            ):
                shutil.copyfileobj(packed, out)
        else:
            shutil.copyfile(origin, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    pg.psql("TRUNCATE memories, memory_tags;", database="sage")


@pytest.mark.parametrize(
    "block",
    RUNNABLE,
    ids=[f"{_name(Path(b.path))}:{b.line}" for b in RUNNABLE],
)
def test_block_runs(block, environment):
    docs.run(block)


def test_the_tour_gets_its_answer_from_the_api(environment, capsys):
    """The README's tour ends in ``except Exception``, which would hide an
    API that does not work: its answer is the stand-in's, and neither
    handler printed anything."""
    (tour,) = [
        block
        for block in RUNNABLE
        if _name(Path(block.path)) == "README.md"
        and 'answer = await complete("hello")' in block.source
    ]
    namespace = docs.run(tour)
    assert "Hello! How can I help?" == namespace["answer"]
    assert "" == capsys.readouterr().out


def test_the_environment_points_the_policies_at_the_servers(
    environment, api, pg
):
    """The blocks reach the stand-ins, not the hosts the YAML names."""
    for name in ("siliconflow_api", "vectorizer"):
        assert policy(name).config.settings["base_url"] == f"{api.url}/v1"
    assert connect_kwargs() == {
        "host": "127.0.0.1",
        "port": pg.port,
        "database": "sage",
        "user": "sage",
        "timeout": 5.0,
    }


def test_blocks_not_run_are_counted():
    counts = {
        _name(page): (
            sum(b.not_run is None for b in docs.blocks(page)),
            sum(b.not_run is not None for b in docs.blocks(page)),
        )
        for page in PAGES
    }
    assert counts == EXPECTED
    assert len(RUNNABLE) >= 3 * (len(BLOCKS) - len(RUNNABLE))


# -- the harness itself -------------------------------------------------------


def _page(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "page.md"
    path.write_text(text, encoding="utf-8")
    return path


def test_marker_applies_to_the_block_below_only(tmp_path):
    page = _page(
        tmp_path,
        "Intro\n\n<!-- not-run: a relative import -->\n```python\n"
        "from ..x import y\n```\n\n```python\nx = 1\n```\n\n"
        "```pycon\n>>> 1 + 1\n2\n```\n",
    )
    found = docs.blocks(page)
    assert [(b.line, b.not_run) for b in found] == [
        (4, "a relative import"),
        (8, None),
        (12, None),
    ]
    assert found[2].doctest


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "<!-- not-run: why -->\n\ntext\n```python\nx = 1\n```\n",
            "not right above",
        ),
        ("<!-- not-run: -->\n```python\nx = 1\n```\n", "needs a reason"),
        ("```py\nx = 1\n```\n", "fenced 'py'"),
    ],
)
def test_markers_and_fences_that_would_hide_a_block(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        docs.blocks(_page(tmp_path, text))


def test_a_failing_block_fails(tmp_path):
    (block,) = docs.blocks(
        _page(tmp_path, "```python\nawait undefined()\n```\n")
    )
    with pytest.raises(NameError, match="undefined"):
        docs.run(block)
    (session,) = docs.blocks(_page(tmp_path, "```pycon\n>>> 1 + 1\n3\n```\n"))
    with pytest.raises(AssertionError, match="Expected"):
        docs.run(session)


# -- the API pages of the site ------------------------------------------------

#: Every public module (the table of tests/test_exports.py) has its page.
PUBLIC_MODULES = {
    name: "api/index.md"
    if name == "sage_resilience"
    else f"api/{name.removeprefix('sage_resilience.')}.md"
    for name in PUBLIC
}


def test_every_public_module_has_an_api_page():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for module, page in PUBLIC_MODULES.items():
        text = (ROOT / "docs" / page).read_text(encoding="utf-8")
        assert f"::: {module}\n" in text
        assert f"{module}: {page}\n" in nav


def test_every_export_has_a_docstring_on_the_site():
    """The site shows documented objects only: none may be missing."""
    extension = griffe.load_extensions(
        f"{ROOT / 'scripts' / 'griffe_rst.py'}:RestToMarkdown"
    )
    package = griffe.load(
        "sage_resilience", search_paths=[str(ROOT)], extensions=extension
    )
    undocumented = []
    for module in PUBLIC_MODULES:
        inner = module.partition(".")[2]
        loaded = package[inner] if inner else package
        for name in importlib.import_module(module).__all__:
            if not loaded[name].has_docstring:
                undocumented.append(f"{module}.{name}")
    assert undocumented == []


def _script(name: str):
    spec = importlib.util.spec_from_file_location(
        name, ROOT / "scripts" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docstrings_rest_becomes_markdown():
    rst = _script("griffe_rst")
    text = (
        "Uses :class:`~sage_resilience.Policy` and :func:`diagnose`.\n"
        "\n"
        "Example::\n"
        "\n"
        "    client = resilient_client('x')\n"
        "\n"
        "Tree::\n"
        "\n"
        "    a\n"
        "    └── b\n"
        "\n"
        ".. versionadded:: 0.1.0\n"
        ".. versionchanged:: 0.2.0\n"
        "   httpx2 clients.\n"
    )
    assert rst.markdown(text) == (
        "Uses `Policy` and `diagnose`.\n"
        "\n"
        "Example:\n"
        "\n"
        "```python\n"
        "client = resilient_client('x')\n"
        "```\n"
        "\n"
        "Tree:\n"
        "\n"
        "```text\n"
        "a\n"
        "└── b\n"
        "```\n"
        "\n"
        "\n*Added in version 0.1.0.*\n"
        "\n"
        "\n*Changed in version 0.2.0:* httpx2 clients.\n"
        "\n"
    )


def test_home_page_links_stay_in_the_site():
    hooks = _script("mkdocs_hooks")
    readme = (
        "[docs](https://github.com/sage-resilience/sage_resilience/blob/main/"
        "docs/fastapi.md#lifespan), [yaml](config/resilience.yaml), "
        "[top](#set-up), [pypi](https://pypi.org/)"
    )
    assert hooks.home_page(readme) == (
        "[docs](fastapi.md#lifespan), [yaml](https://github.com/"
        "sage-resilience/sage_resilience/blob/main/config/resilience.yaml), "
        "[top](#set-up), [pypi](https://pypi.org/)"
    )
