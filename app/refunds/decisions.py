"""What to do next about a refund, from what we hold and what WeChat last said: a pure function.

The rules (PROTOCOL.md §6.3-6.5):

- A refund stored a moment ago and never sent is sent at once. Any other refund (one a sweep or
  a replay picks up, or one WeChat has accepted) is first asked about: the same
  ``out_refund_no`` is refunded at most once, but only a refund WeChat has never seen may be
  sent again.
- WeChat's word on a refund (a query's outcome, an accepted request) is recorded.
- A refusal is final only if WeChat does not have the refund: the client resends after a
  timeout, so a refusal can follow an earlier attempt that WeChat took. So a refusal is
  followed by a query, and the refund fails only when the query finds nothing.
- "Not now" (WeChat unreachable, or a retry-later refusal) leaves the refund as it is, with the
  reason noted; the sweep comes back to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from app.gateway import RefundOutcome
from app.refunds.states import RefundStatus


class Heard(Enum):
    """What WeChat last said about the refund, in this pass."""

    NOTHING = "nothing asked or sent yet"
    ABSENT = "a query: WeChat has never seen it"
    UNDECIDED = "a query: WeChat has it, with a legacy status that decides nothing"
    SETTLED = "a query: WeChat's outcome"
    UNREACHABLE = "a query failed"
    ACCEPTED = "our request was accepted"
    NOT_CONFIRMED = "our request's fate is unknown, or WeChat said later"
    REFUSED = "our request was refused"


@dataclass(frozen=True, slots=True)
class Said:
    heard: Heard
    outcome: RefundOutcome | None = None  # SETTLED, ACCEPTED
    text: str = ""  # UNREACHABLE, NOT_CONFIRMED, REFUSED: WeChat's reason


@dataclass(frozen=True, slots=True)
class Pass:
    """What this pass knows: the refund's status when it began, whether it may have been sent
    before (a sweep, a replay), and WeChat's refusal earlier in the pass, if any."""

    status: RefundStatus
    sent_before: bool
    refused: str | None = None


class Do(Enum):
    ASK = "query WeChat"
    SEND = "send the refund"
    RECORD = "record WeChat's outcome"
    FAIL = "record the refund as FAILED"
    NOTE = "note the error and stop"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class Action:
    do: Do
    outcome: RefundOutcome | None = None  # RECORD
    error: str | None = None  # NOTE, FAIL, and RECORD after a refusal


def next_action(state: Pass, said: Said) -> Action:
    """The next step of a pass over one refund."""
    heard, pending = said.heard, state.status is RefundStatus.PENDING
    if heard is Heard.NOTHING:
        return Action(Do.SEND if pending and not state.sent_before else Do.ASK)
    if heard in (Heard.SETTLED, Heard.ACCEPTED):
        return Action(Do.RECORD, said.outcome, state.refused)
    if heard is Heard.REFUSED:
        return Action(Do.ASK)  # does WeChat have it after all (from an earlier attempt)?
    if heard in (Heard.UNREACHABLE, Heard.NOT_CONFIRMED):
        return Action(Do.NOTE, error=state.refused or said.text)
    if state.refused is not None:
        # Refused, and the query found it absent (no money moved) or undecided (it may have).
        return Action(Do.FAIL if heard is Heard.ABSENT else Do.NOTE, error=state.refused)
    # ABSENT or UNDECIDED: sending the same out_refund_no again is safe.
    return Action(Do.SEND) if pending else Action(Do.STOP)
