"""Executors: run a sweep's jobs from the job table.

- ``local``: an embedded process pool on this machine (``near sweep run``).
- ``slurm``: job arrays through submitit (``near sweep submit``).
- ``runner``: shared helpers that launch one job (run dir, ``command.sh``, logs, process group).
"""
