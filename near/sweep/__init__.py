"""From a sweep spec to the commands its jobs run, in the order the data flows.

``spec`` (YAML -> :class:`Spec`, with ``search_block`` for a ``search:`` block) -> ``expand``
(grid points -> jobs, quoting every value with ``shell``) -> ``validate`` (every job's overrides
compose with the hydra config tree) -> the job table. ``importing`` is the side door: runs made
elsewhere enter the table as done jobs. Nothing here imports from a later stage.
"""
