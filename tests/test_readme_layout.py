"""README's "Repository layout" names every module and folder of the package, one line each, and nothing
that does not exist (a newcomer reads it to find where a piece lives)."""
from __future__ import annotations

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def layout_paths() -> set[str]:
    """The paths of the layout block: each line's first word, nested under the folder lines above it."""
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    block = re.search(r"## Repository layout\n.*?```\n(.*?)```", text, re.S).group(1)
    paths, folders = set(), []
    for line in block.splitlines():
        name = line.split()[0]
        depth = (len(line) - len(line.lstrip(" "))) // 2
        folders = folders[:depth]
        path = "/".join([*folders, name.rstrip("/")])
        paths.add(path)
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
    return paths


def package_paths() -> set[str]:
    found = set()
    for folder, dirs, files in os.walk(os.path.join(REPO, "thorax_ray")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        relative = os.path.relpath(folder, REPO)
        found.add(relative)
        found.update(f"{relative}/{name}" for name in files if name.endswith(".py") and name != "__init__.py")
    return found


def test_layout_lists_every_module_and_folder_of_the_package():
    missing = package_paths() - layout_paths()
    assert not missing, f"README layout lacks: {sorted(missing)}"


def test_layout_lists_nothing_that_does_not_exist():
    stale = {path for path in layout_paths() if not os.path.exists(os.path.join(REPO, path))}
    assert not stale, f"README layout names what does not exist: {sorted(stale)}"
