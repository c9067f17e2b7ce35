"""The README's exit-code table and thorax_ray.exit_codes say the same: every code the jobs use is in the table,
and the table has no code the jobs do not use (130/143 come from thorax_ray.interrupts)."""
import os
import re

from thorax_ray import exit_codes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_readme_table_lists_exactly_the_jobs_exit_codes():
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    table = text[text.index("| exit code | meaning |"):]
    table = table[:table.index("\n\n")]
    listed = {int(code) for row in table.splitlines()[2:] for code in re.findall(r"\d+", row.split("|")[1])}
    used = {v for k, v in vars(exit_codes).items() if k.isupper()}
    assert listed == used | {130, 143}
