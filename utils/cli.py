"""Command-line helpers shared by the entry points."""
from __future__ import annotations

import argparse


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows every flag's default, except ``None``: such flags say in their own help
    what leaving them out means ("default: all"), which a "(default: None)" would contradict."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)
