"""Unattended reconciliation (``reconcile``, from cron or a systemd timer).

``policy`` (pure) turns the fleet file's ``reconcile:`` section and the local time into what a
run may apply; ``outcome`` (pure) turns a plan and its apply into the run's result, exit code and
per-host counts; ``lock`` (I/O) is the exclusive lock that keeps two runs, or a run and an
``apply``, from interleaving; ``cycle`` (I/O) observes, plans, governs and applies one run.
See docs/reconcile.md.
"""
