"""Exit statuses with a meaning to near, the same for every stage and backend.

A job's command (near's trainers, or any program) tells its controller how it ended:

- ``EXIT_OK`` (0): finished; the job is done.
- ``EXIT_CONFIG`` (2): bad input or config; failed, never retried.
- ``EXIT_INTERRUPTED`` (3): stopped on request with its checkpoint written; resumable, back to
  pending without charging an attempt.

Any other status is a crash (retried up to the job's ``max_attempts``).

``EXIT_STOPPED`` (130, the shell's Ctrl-C status) is near's own: a controller or command stopped
by Ctrl-C / SIGTERM; running it again continues.
"""

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 3
EXIT_STOPPED = 130
