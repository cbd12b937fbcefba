"""Search sweeps: trials proposed by Optuna (grid, random, TPE), run as jobs of the job table,
losers pruned early (median, ASHA). ``config`` is pure; ``study``, ``metric``, ``controller`` and
``report`` do the I/O."""
