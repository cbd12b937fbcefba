"""`near render RUN_DIR --out clip.gif|.mp4`: the trained humanoid policy beside its reference motion."""

from __future__ import annotations

import argparse


def _render(args: argparse.Namespace) -> int:
    from near.training.render import render_run

    done = render_run(args.run_dir, args.out, args.checkpoint, args.steps, args.width, args.height)
    print(f"near: wrote {args.out} ({done.frames} frames; left: policy, right: reference)")
    print(f"near: {done.summary()}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `render` command."""
    p = subparsers.add_parser("render", help="render a humanoid run's policy beside its reference motion",
                              description=__doc__)
    p.add_argument("run_dir", help="a `near train rl` run directory (config.yaml, nn/checkpoint.pth)")
    p.add_argument("--checkpoint", help="another checkpoint than RUN_DIR/nn/checkpoint.pth")
    p.add_argument("--out", required=True, help="clip.gif or clip.mp4")
    p.add_argument("--steps", type=int, default=150, help="control steps (30 per second)")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.set_defaults(func=_render)
