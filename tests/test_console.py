"""thorax_ray.console: the lines people read, and the package printing only through it."""
from __future__ import annotations

import ast
import os

from thorax_ray import console

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The only modules that print: console lines, and the progress line a stage's counter updates in place.
PRINTING = {"thorax_ray/console.py", "thorax_ray/progress.py"}


def test_say_is_one_bracketed_line_on_stdout(capsys):
    console.say("train", "resnet18 on prepared data")
    console.say("chain", "epoch 1/1")
    out, err = capsys.readouterr()
    assert out == "[train] resnet18 on prepared data\n[chain] epoch 1/1\n" and err == ""


def test_line_is_the_text_as_given(capsys):
    console.line("  rendered 10/20 images (5/s)")
    assert capsys.readouterr().out == "  rendered 10/20 images (5/s)\n"


def test_error_goes_to_stderr_as_given(capsys):
    console.error("error: no such file: x.csv")
    out, err = capsys.readouterr()
    assert out == "" and err == "error: no such file: x.csv\n"


def printing_modules() -> set[str]:
    found = set()
    for folder, _, names in os.walk(os.path.join(REPO, "thorax_ray")):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                tree = ast.parse(open(path, encoding="utf-8").read())
                if any(isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
                       for node in ast.walk(tree)):
                    found.add(os.path.relpath(path, REPO).replace(os.sep, "/"))
    return found


def test_the_package_prints_through_console():
    assert printing_modules() <= PRINTING
