"""Paper-figure regeneration: event files -> RunData -> figure and table kinds -> page.

Modules, in the order the data flows: `events` (streamed, bounded event-file decoder), `logs`
(discovery, parquet cache), `runmeta` (metadata of runs under no job: run patterns, config files),
`runs` (one row per run, spec selection), `rundata` (RunData: every run's metadata and series,
built once, with every run left out named), `stats` (pure per-curve statistics), `aggregates`
(rliable's statistics across tasks), `spec` (typed plotting specs), `registry` (figure and table
kinds), the kinds (`curve_kinds`, `score_kinds`, `landscape`) drawing with `figures`,
`aggregate_figures` and `tables`, `page` (index.html), `pipeline` (the `near report` driver).
"""
