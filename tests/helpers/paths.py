"""Where the tests find the repository, the package's modules and the helper programs they start."""

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MCP_SERVER = str(Path(__file__).with_name("mcp_server.py"))


def package_modules() -> dict[str, Path]:
    """Every module of the installed package, by dotted name, from pyproject.toml's package-dir
    (the folders setuptools installs as ``agent_ng`` and its subpackages)."""
    package_dir = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    found = {}
    for package, folder in package_dir.items():
        for path in sorted((REPO / folder).glob("*.py")):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found
