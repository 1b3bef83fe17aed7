"""Command-line helpers shared by the entry points."""
from __future__ import annotations

import argparse
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows every flag's default, except ``None``: such flags say in their own help
    what leaving them out means ("default: all"), which a "(default: None)" would contradict.
    Paths inside the repository are shown relative to it (``data_test``, not the checkout's
    absolute path, which would also wrap mid-name)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)

    def _expand_help(self, action: argparse.Action) -> str:
        return super()._expand_help(action).replace(ROOT + "/", "").replace(ROOT, ".")
