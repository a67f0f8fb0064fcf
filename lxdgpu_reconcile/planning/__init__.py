"""The pure half of the reconciler: desired state, diff, plan. No I/O anywhere in this package.

``planner.make_plan(fleet, snapshot, site, ...)`` is the entry point; the stages are
``desired.expand`` (fleet -> desired objects per host), ``template_steps`` (template builds,
copies and alias moves), ``diff`` (field changes on a normalised form), ``rules`` (what LXD
applies live or only at start), ``host_planner`` (the ordered actions, errors and notes of one
host) and ``holds`` (what waits for a pending action). The plan's types are in ``model``. See
docs/planning.md.
"""
