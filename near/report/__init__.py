"""Paper-figure regeneration: event files -> cached tidy frame -> statistics -> figures and tables.

Modules, in the order the data flows: `events` (fast event-file decoder), `logs` (discovery,
parquet cache, parallel reading, job-metadata join), `runmeta` (metadata of runs under no job:
run-dir patterns, hydra/rl-games configs), `runs` (one row per run, spec selection), `stats`
(pure per-curve statistics), `aggregates` (rliable's statistics across tasks), `spec` (plotting
YAML specs), `figures`, `aggregate_figures`, `tables`, `landscape` (learnt-reward figures),
`page` (index.html), `pipeline` (the `near report` driver).
"""
