"""The rule of every domain scored one cycle at a time with its asset's history (turbofan).

Its own module, free of model imports: the serving path, the domain's data code and the UI's
upload parsing all check it.
"""

from __future__ import annotations

from collections.abc import Iterable

from machine_health.errors import InputError, SequenceConflict


class CycleJump(InputError):
    """A cycle too far ahead of the unit's last known cycle (the API's 422)."""


def check_next_cycle(
    unit_id: str, known_cycles: Iterable[int], cycle: int, *, max_jump: int | None = None
) -> None:
    """Refuse a cycle that repeats or precedes the unit's latest known cycle (SequenceConflict),
    or, with `max_jump`, lies more than `max_jump` cycles after it (CycleJump).

    The rule of every domain scored one cycle at a time with its asset's history (the API's
    409); one definition for the domain code and the serving path. The jump limit keeps one
    wrong (or hostile) cycle, e.g. 9,000,000, from making every later real cycle of the unit a
    409: a unit without known cycles counts from cycle 0, so its first cycle is at most
    `max_jump` too (an admin repairs a unit with `DELETE /assets/{unit}/cycles`).
    """
    known = list(known_cycles)
    latest = max(known) if known else 0
    if known and (cycle == latest or cycle in known):
        raise SequenceConflict(f"unit {unit_id!r}: cycle {cycle} was already recorded")
    if known and cycle < latest:
        raise SequenceConflict(
            f"unit {unit_id!r}: cycle {cycle} goes backwards (latest known cycle is {latest})"
        )
    if max_jump is not None and cycle - latest > max_jump:
        where = f"its latest known cycle {latest}" if known else "cycle 0 (a new unit)"
        raise CycleJump(
            f"cycle: {cycle} is more than {max_jump} cycles after {where} of unit {unit_id!r} "
            "(MH_MAX_CYCLE_JUMP); send the unit's cycles as they happen"
        )
