"""The wheel as a user gets it: built, installed alone, run.

Slow (a wheel build and a fresh virtualenv, some 15 s), marked ``slow``;
it runs in CI like every other test (``-m "not slow"`` leaves it out
locally). The virtualenv gets the wheel and its required dependencies
only, from the package indexes pip is configured with: no extras.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from email.parser import Parser
from importlib.metadata import version
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
VERSION = version("sage-resilience")
REPOSITORY = "https://github.com/sage-resilience/sage_resilience"
#: What the extras bring; none of it may be in the fresh virtualenv.
EXTRAS_ONLY = {
    "asyncpg",
    "httpx",
    "httpx2",
    "openai",
    "pgserver",
    "prometheus-client",
    "redis",
    "shtab",
}


def _run(
    argv: list[str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.pop("VIRTUAL_ENV", None)
    env["NO_COLOR"] = "1"
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,  # never the source tree: it must not be importable
        env=env,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this source tree, as ``python -m build``."""
    out = tmp_path_factory.mktemp("dist")
    built = _run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out)],
        cwd=ROOT,
    )
    assert 0 == built.returncode, built.stdout + built.stderr
    (found,) = out.glob("*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel and its required dependencies."""
    home = tmp_path_factory.mktemp("venv")
    made = _run([sys.executable, "-m", "venv", str(home)], cwd=home)
    assert 0 == made.returncode, made.stderr
    installed = _run(
        [
            str(home / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(wheel),
        ],
        cwd=home,
    )
    assert 0 == installed.returncode, installed.stdout + installed.stderr
    return home


def cli(venv: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return _run([str(venv / "bin" / "sage-resilience"), *argv], venv, 60)


def python(venv: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return _run([str(venv / "bin" / "python"), *argv], venv, 60)


class TestWheel:
    def test_contents(self, wheel):
        """Licence, typing marker, shipped configuration, entry points."""
        names = set(zipfile.ZipFile(wheel).namelist())
        info = f"sage_resilience-{VERSION}.dist-info"
        assert {
            f"{info}/licenses/LICENSE",
            f"{info}/METADATA",
            f"{info}/entry_points.txt",
            "sage_resilience/py.typed",
            "sage_resilience/__main__.py",
            "sage_resilience/cli/__main__.py",
            "sage_resilience/_data/resilience.yaml",
        } <= names
        assert not [name for name in names if name.startswith("tests/")]

    def test_metadata(self, wheel):
        """PEP 639 licence fields, project URLs, absolute README links."""
        info = f"sage_resilience-{VERSION}.dist-info"
        with zipfile.ZipFile(wheel) as archive:
            text = archive.read(f"{info}/METADATA").decode()
            entry_points = archive.read(f"{info}/entry_points.txt").decode()
        metadata = Parser().parsestr(text)
        assert "MIT" == metadata["License-Expression"]
        assert ["LICENSE"] == metadata.get_all("License-File")
        urls = dict(
            line.split(", ", 1) for line in metadata.get_all("Project-URL")
        )
        assert {
            "Homepage",
            "Repository",
            "Issues",
            "Changelog",
            "Documentation",
        } == set(urls)
        assert all(url.startswith(REPOSITORY) for url in urls.values())
        classifiers = metadata.get_all("Classifier")
        minor = f"{sys.version_info.major}.{sys.version_info.minor}"
        assert f"Programming Language :: Python :: {minor}" in classifiers
        assert "Typing :: Typed" in classifiers
        assert "sage-resilience = sage_resilience.cli:main" in entry_points
        description = metadata.get_payload()
        assert "](docs/" not in description
        assert f"]({REPOSITORY}/blob/main/docs/" in description

    def test_licence_is_the_file(self, wheel):
        info = f"sage_resilience-{VERSION}.dist-info"
        with zipfile.ZipFile(wheel) as archive:
            shipped = archive.read(f"{info}/licenses/LICENSE").decode()
        assert (ROOT / "LICENSE").read_text() == shipped
        assert shipped.startswith("MIT License")


class TestFreshVirtualenv:
    def test_no_extras_installed(self, venv):
        listed = python(venv, "-m", "pip", "list", "--format", "json")
        assert 0 == listed.returncode, listed.stderr
        names = {entry["name"].lower() for entry in json.loads(listed.stdout)}
        assert "sage-resilience" in names
        assert set() == names & EXTRAS_ONLY

    def test_imports_the_installed_copy(self, venv):
        shown = python(
            venv,
            "-c",
            "import sage_resilience; print(sage_resilience.__file__)",
        )
        assert 0 == shown.returncode, shown.stderr
        assert Path(shown.stdout.strip()).is_relative_to(venv)

    def test_version(self, venv):
        """sage-resilience --version: one line on stdout, nothing else."""
        result = cli(venv, "--version")
        assert (0, f"sage-resilience {VERSION}\n", "") == (
            result.returncode,
            result.stdout,
            result.stderr,
        )

    def test_python_m(self, venv):
        result = python(venv, "-m", "sage_resilience", "--version")
        assert (0, f"sage-resilience {VERSION}\n", "") == (
            result.returncode,
            result.stdout,
            result.stderr,
        )

    def test_config_validate(self, venv):
        """The shipped configuration validates; stdout holds the verdict."""
        path = ROOT / "config" / "resilience.yaml"
        result = cli(venv, "config", "validate", str(path))
        assert (0, f"{path}: ok\n", "") == (
            result.returncode,
            result.stdout,
            result.stderr,
        )

    def test_config_show_json(self, venv):
        """The configuration shipped in the wheel, as JSON alone on stdout."""
        result = cli(venv, "config", "show", "--format", "json")
        assert 0 == result.returncode, result.stderr
        shown = json.loads(result.stdout)
        assert "siliconflow_api" in shown["policies"]

    def test_status_json(self, venv):
        """The engine runs without any extra.

        The shipped storage is memory: the status is this process's own,
        which the entries say, and the exit code is 1.
        """
        result = cli(venv, "status", "--json")
        assert 1 == result.returncode, result.stderr
        entry = json.loads(result.stdout)["vectorizer"]
        assert ("closed", "this-process") == (
            entry["state"],
            entry["storage_health"],
        )
        assert "the storage is 'memory'" in result.stderr

    @pytest.mark.parametrize(
        "command",
        [
            "demo",
            "config show",
            "doctor",
            "status",
            "breaker",
            "logs summarize",
            "completion",
        ],
    )
    def test_help(self, venv, command):
        """Every command's help, whole, without any extra."""
        result = cli(venv, *command.split(), "--help")
        assert (0, "") == (result.returncode, result.stderr)
        assert result.stdout.startswith(f"usage: sage-resilience {command}")
        assert "--help" in result.stdout

    def test_completion_needs_its_extra(self, venv):
        result = cli(venv, "completion", "bash")
        assert (1, "") == (result.returncode, result.stdout)
        assert "pip install 'sage-resilience[completion]'" in result.stderr
        assert 1 == len(result.stderr.splitlines())
