"""The rule of every domain scored one cycle at a time with its asset's history (turbofan).

Its own module, free of model imports: the serving path, the domain's data code and the UI's
upload parsing all check it.
"""

from __future__ import annotations

from collections.abc import Iterable

from machine_health.errors import SequenceConflict


def check_next_cycle(unit_id: str, known_cycles: Iterable[int], cycle: int) -> None:
    """Refuse a cycle that repeats or precedes the unit's latest known cycle (SequenceConflict).

    The rule of every domain scored one cycle at a time with its asset's history (the API's
    409); one definition for the domain code and the serving path.
    """
    known = list(known_cycles)
    if not known:
        return
    latest = max(known)
    if cycle == latest or cycle in known:
        raise SequenceConflict(f"unit {unit_id!r}: cycle {cycle} was already recorded")
    if cycle < latest:
        raise SequenceConflict(
            f"unit {unit_id!r}: cycle {cycle} goes backwards (latest known cycle is {latest})"
        )
