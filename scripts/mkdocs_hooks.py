"""MkDocs hooks of the documentation site (mkdocs.yml ``hooks:``).

- The home page is README.md, its links to docs/*.md on GitHub turned into
  links within the site (README.md is written for GitHub and PyPI, where
  relative links to docs/ would not resolve).
- A page's links to ``../README.md`` lead to the home page.
- Every docs/*.md page is in the navigation: those mkdocs.yml lists under
  "Guides" in its order, any other after them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
GITHUB_DOCS = re.compile(
    r"https://github\.com/sage-resilience/sage_resilience/blob/main/docs/"
    r"(?P<page>[\w-]+\.md)(?P<anchor>#[\w-]*)?"
)
GITHUB_FILES = "https://github.com/sage-resilience/sage_resilience/blob/main/"
GUIDES = "Guides"


def home_page(readme: str) -> str:
    """README.md as the site's home page."""
    # Links to other files of the repository (not pages of the site)...
    text = re.sub(
        r"\]\((?!https?://|#)(?P<path>[^)\s]+)\)",
        lambda m: f"]({GITHUB_FILES}{m.group('path')})",
        readme,
    )
    # ...and links to docs/*.md on GitHub, which are pages of the site.
    return GITHUB_DOCS.sub(
        lambda m: m.group("page") + (m.group("anchor") or ""), text
    )


def on_config(config: Any) -> Any:
    """Every docs/*.md page under "Guides", the listed ones first."""
    docs_dir = Path(config["docs_dir"])
    for section in config["nav"] or []:
        if isinstance(section, dict) and GUIDES in section:
            listed = {next(iter(item.values())) for item in section[GUIDES]}
            section[GUIDES].extend(
                {page.stem.capitalize(): page.name}
                for page in sorted(docs_dir.glob("*.md"))
                if page.name not in listed
            )
    return config


def on_files(files: Files, config: Any) -> Files:
    """Add README.md as index.md."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    files.append(File.generated(config, "index.md", content=home_page(readme)))
    return files


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Links to ``../README.md`` lead to the home page."""
    return markdown.replace("](../README.md", "](index.md")
