"""`near` CLI commands of the report group (placeholder until the stage lands)."""

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this group's commands to `subparsers`."""
