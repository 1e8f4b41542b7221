"""The layers of docs/architecture.md, kept by walking every import of every module.

    launch/ , benchmarks/                   the wiring and the benchmarks (on top)
    ingest/ transcoder/ origin/ archiver/ scheduler/ chat/ webhooks/ conformance/   the components
    castway/                                the kernel (below everything)

The kernel imports no component; a component imports the kernel and itself, never another
component (what one needs of another is a kernel contract); the wiring may import every
component; nothing in the product imports the wiring or the benchmarks. Imports inside
functions and under ``TYPE_CHECKING`` count: a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNEL = "castway"
COMPONENTS = ("ingest", "transcoder", "origin", "archiver", "scheduler", "chat",
              "webhooks", "conformance")
WIRING = "launch"
BENCHMARKS = "benchmarks"
PACKAGES = (KERNEL, *COMPONENTS, WIRING, BENCHMARKS)

#: What each package may import besides itself, the standard library and third parties.
ALLOWED: dict[str, frozenset[str]] = {
    KERNEL: frozenset(),
    **{component: frozenset({KERNEL}) for component in COMPONENTS},
    WIRING: frozenset({KERNEL, *COMPONENTS, BENCHMARKS}),
    BENCHMARKS: frozenset({KERNEL, *COMPONENTS, WIRING}),
}


@dataclass(frozen=True)
class Arrow:
    module: str
    imported: str
    line: int

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.imported}"


def imports_of(source: str) -> Iterator[tuple[str, int]]:
    """Every absolute module name ``source`` imports, with its line, wherever it is."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno


def violations(package: str, module: str, source: str) -> list[Arrow]:
    allowed = ALLOWED[package] | {package}
    return [Arrow(module, name, line) for name, line in imports_of(source)
            if name.split(".")[0] in PACKAGES and name.split(".")[0] not in allowed]


def product_modules() -> Iterator[tuple[str, str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            yield package, module, path


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_the_layers_below_it(package: str) -> None:
    found = [str(arrow) for pkg, module, path in product_modules() if pkg == package
             for arrow in violations(pkg, module, path.read_text())]
    assert found == []


def test_the_walk_sees_every_package() -> None:
    modules = {pkg for pkg, _, _ in product_modules()}
    assert modules == set(PACKAGES)


@pytest.mark.parametrize(("package", "source", "caught"), [
    # the kernel reaching up into a component, even lazily inside a function
    ("castway", "def f():\n    from archiver.service import ArchiverService\n",
     ["archiver.service"]),
    # one component importing another
    ("transcoder", "from archiver import uploader\n", ["archiver"]),
    # a component importing the wiring, even only for typing
    ("origin", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import launch.cli\n",
     ["launch.cli"]),
    ("chat", "import benchmarks.kit\n", ["benchmarks.kit"]),
    # allowed: the kernel, the component itself, the standard library, third parties
    ("ingest", "import asyncio\nimport av\nfrom castway.media import MediaPacket\n"
               "from ingest.server import IngestServer\n", []),
    ("launch", "from ingest.server import IngestServer\nfrom origin.app import create_app\n",
     []),
])
def test_a_deliberate_violation_is_caught(package: str, source: str,
                                          caught: list[str]) -> None:
    assert [a.imported for a in violations(package, f"{package}.example", source)] == caught
