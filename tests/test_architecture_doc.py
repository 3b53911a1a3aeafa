"""docs/architecture.md names every module of the package, so the map of a
task's path has no blank (a new module gets its place on it)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "molecule_runtime"


def unnamed(doc: str) -> list[str]:
    """The package's modules the document does not name by their path in it
    (packages' `__init__.py` aside: the folder is named)."""
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        named = f"{relative.parent}/" if path.name == "__init__.py" else str(relative)
        if named == "./":
            continue
        if f"`{named}" not in doc and f"{named}`" not in doc and f" {named}" not in doc:
            missing.append(named)
    return missing


def test_the_architecture_names_every_module() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert not unnamed(doc), unnamed(doc)


def test_a_module_left_out_is_found() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert "server/send_gate.py" in unnamed(doc.replace("server/send_gate.py", "the send gate"))
