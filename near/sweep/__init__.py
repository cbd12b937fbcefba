"""From a sweep spec to the commands its jobs run, in the order the data flows.

``spec`` (YAML -> :class:`Spec`, with ``search_block`` for a ``search:`` block, each stage's
command read once by ``template``) -> ``expand`` (grid points -> jobs, every value quoted for its
place by ``shell``) -> ``validate`` (every job's trainer call composes with the hydra config
tree) -> the job table -> ``dispatch`` (the job's paths quoted into its command). ``importing`` is
the side door: runs made elsewhere enter the table as done jobs. Nothing here imports from a
later stage but the table's row type (``JobSpec``) and ``importing`` (it reads runs as the
report does).
"""
