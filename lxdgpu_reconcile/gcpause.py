"""``gc_paused``: Python's cyclic garbage collector paused while many objects are made. No I/O.

Loading a large fleet file and planning a large fleet make hundreds of thousands of objects that
live on; the cyclic collector would scan them again and again, which makes both superlinear.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the body; reference counting still frees.

    Restores the collector's previous state (a caller that paused it keeps it paused). What the
    body made is moved to the oldest generation as it is (``gc.freeze`` then ``gc.unfreeze``):
    otherwise the first collection after the body would scan all of it at once."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.unfreeze()
            gc.enable()
