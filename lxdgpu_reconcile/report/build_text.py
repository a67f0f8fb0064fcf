"""``build TEMPLATE``'s result as lines for the command line. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterator

from lxdgpu_reconcile.execute.build_outcome import BuildOutcome


def lines(outcome: BuildOutcome) -> Iterator[tuple[bool, str]]:
    """The report of ``outcome``: (is a problem, line); problems go to standard error."""
    where = f"{outcome.alias} ({outcome.fingerprint[:12]}) on {outcome.build_host}"
    if outcome.action == "built":
        yield False, f"built {where} in {outcome.seconds:.1f} s: {outcome.reason}"
    elif outcome.action == "restored":
        yield False, f"restored {where}: {outcome.reason}"
    else:
        yield False, f"unchanged: {where} already carries the recipe"
    yield False, f"  recipe {outcome.recipe_hash}"
    for copy in outcome.copies:
        if copy.action == "failed":
            yield True, f"error: {copy.host}: copy failed: {copy.error}"
            if copy.hint:
                yield True, f"  what to do: {copy.hint}"
        elif copy.action == "copied":
            yield False, f"copied to {copy.host} in {copy.seconds:.1f} s"
        elif copy.action == "aliased":
            yield False, f"{copy.host} had the image; pointed {outcome.alias} at it"
        else:
            yield False, f"{copy.host} already has it"
    for host, fingerprints in outcome.pruned.items():
        if fingerprints:
            short = ", ".join(fp[:12] for fp in fingerprints)
            yield False, f"deleted old images on {host}: {short}"
