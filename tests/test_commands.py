"""rkif.commands: one table drives the scripts under src/, the console commands and docs/flags.md."""

import ast
import os
import tomllib

from rkif.commands import COMMANDS, entry_points

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_console_commands_are_the_table():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts == {c.console_command: f"rkif.commands:entry_points.{c.name}" for c in COMMANDS}
    for c in COMMANDS:
        assert getattr(entry_points, c.name) == c.main


def test_every_script_under_src_runs_its_table_entry_and_nothing_else():
    listed = {c.script: c.name for c in COMMANDS}
    found = {f"src/{n}" for n in os.listdir(os.path.join(ROOT, "src"))
             if n.endswith(".py") and "entry_points" in open(os.path.join(ROOT, "src", n)).read()}
    assert found == set(listed)
    for script, name in listed.items():
        tree = ast.parse(open(os.path.join(ROOT, script)).read())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                 and isinstance(n.func.value, ast.Name) and n.func.value.id == "entry_points"]
        assert [c.func.attr for c in calls] == [name], script
