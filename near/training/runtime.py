"""Run-time plumbing shared by the stages: stop signals, RNG capture, atomic checkpoints.

Signals contract (COMMON.md): on SIGTERM, SIGUSR2 or a first SIGINT (Ctrl-C) a trainer writes a
checkpoint at the next iteration boundary and exits with :data:`EXIT_INTERRUPTED` (3, "interrupted,
resumable"); a second SIGINT stops it at once.
"""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Any

# a trainer's statuses are near's own, the same for every stage and backend
from near.exitcodes import EXIT_INTERRUPTED  # noqa: F401
from near.exitcodes import EXIT_OK as EXIT_DONE  # noqa: F401


class StopRequest:
    """Set by SIGTERM / SIGUSR2 / a first Ctrl-C; trainers poll :attr:`requested` at iteration
    boundaries, checkpoint and exit 3 (resumable). A second Ctrl-C stops at once (KeyboardInterrupt,
    no checkpoint), as a user pressing it twice expects."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.requested:
            raise KeyboardInterrupt
        # Only record the request: the trainer checkpoints at the next iteration boundary.
        self.signum = signum
        again = "; Ctrl-C again stops at once, without it" if signum == signal.SIGINT else ""
        print(f"near: received {signal.Signals(signum).name}; checkpointing at the next iteration boundary{again}",
              flush=True)

    def install(self) -> "StopRequest":
        for sig in self.SIGNALS:
            previous = signal.getsignal(sig)
            # a process started with Ctrl-C ignored (a shell script's background job, nohup) keeps it so
            if sig == signal.SIGINT and previous == signal.SIG_IGN:
                continue
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def capture_rng() -> dict[str, Any]:
    """States of every global random generator a run draws from."""
    import numpy as np
    import torch

    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng` returned."""
    import numpy as np
    import torch

    # a checkpoint loaded onto the GPU brings its RNG states there; torch takes them on the CPU only
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file, fsync, then rename over ``path`` (never half-written)."""
    import torch

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # a second Ctrl-C during the save, a full disk: the last checkpoint stands
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path: str, device: str = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by near (clear error naming the file if it is unreadable)."""
    import torch

    from near.errors import ConfigError

    if not os.path.isfile(path):
        raise ConfigError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # corrupt / foreign file
        raise ConfigError(f"checkpoint {path} is unreadable ({type(err).__name__}: {err})") from err


def now() -> float:
    """Wall-clock time used to stamp checkpoints (compared with event wall times on resume)."""
    return time.time()
