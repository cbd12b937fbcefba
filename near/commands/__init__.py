"""Command groups of the `near` CLI; each module exposes `register(subparsers)`."""
