"""Built-in CPU demo: a tiny T5 and a synthetic 3-task benchmark through the whole pipeline.

    .venv/bin/python src/demo.py [--seed N]            # (what `make demo` runs)

What it does, and its flags: rkif/demo.py (or --help).
"""

from rkif.commands import entry_points

if __name__ == "__main__":
    entry_points.demo()
