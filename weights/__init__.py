"""The shipped weights (see docs/weights.md). A package only so that ``pip install .`` carries the files."""
