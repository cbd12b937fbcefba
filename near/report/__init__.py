"""Paper-figure regeneration: event files -> cached tidy frame -> statistics -> figures and tables.

Modules, in the order the data flows: `events` (fast event-file decoder), `logs` (discovery,
parquet cache, parallel reading, job-metadata join), `stats` (pure statistics), `spec` (plotting
YAML specs), `figures`, `tables`, `landscape` (learnt-reward figures), `pipeline` (the `near
report` driver).
"""
