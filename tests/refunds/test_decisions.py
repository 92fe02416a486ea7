"""The refund decision table (PROTOCOL.md §6.3-6.5), one row per case."""

from __future__ import annotations

import itertools

import pytest

from app.gateway import RefundOutcome
from app.refunds.decisions import Action, Do, Heard, Pass, Said, next_action
from app.refunds.states import RefundStatus

PENDING, PROCESSING = RefundStatus.PENDING, RefundStatus.PROCESSING
ACCEPTED = RefundOutcome(RefundStatus.PROCESSING, "WX-R1")
SETTLED = RefundOutcome(RefundStatus.SUCCESS, "WX-R1")
REFUSAL = "NOT_ENOUGH_MONEY: the order cannot be refunded"

ROWS = [
    # (status at start, sent before, refused earlier, WeChat said, next step)
    # A refund stored a moment ago has never been sent: send it.
    (PENDING, False, None, Said(Heard.NOTHING), Action(Do.SEND)),
    # One the sweep or a replay picks up may have reached WeChat: ask first.
    (PENDING, True, None, Said(Heard.NOTHING), Action(Do.ASK)),
    (PROCESSING, True, None, Said(Heard.NOTHING), Action(Do.ASK)),
    (PROCESSING, False, None, Said(Heard.NOTHING), Action(Do.ASK)),
    # Never seen, or a legacy status that decides nothing: sending again is safe.
    (PENDING, True, None, Said(Heard.ABSENT), Action(Do.SEND)),
    (PENDING, True, None, Said(Heard.UNDECIDED), Action(Do.SEND)),
    # An accepted refund is never sent again, whatever the query says.
    (PROCESSING, True, None, Said(Heard.ABSENT), Action(Do.STOP)),
    (PROCESSING, True, None, Said(Heard.UNDECIDED), Action(Do.STOP)),
    # WeChat's word is recorded.
    (PENDING, True, None, Said(Heard.SETTLED, SETTLED), Action(Do.RECORD, SETTLED)),
    (PROCESSING, True, None, Said(Heard.SETTLED, SETTLED), Action(Do.RECORD, SETTLED)),
    (PENDING, False, None, Said(Heard.ACCEPTED, ACCEPTED), Action(Do.RECORD, ACCEPTED)),
    # Nothing can be concluded: note why and leave it for the sweep.
    (PENDING, True, None, Said(Heard.UNREACHABLE, text="timeout"),
     Action(Do.NOTE, error="timeout")),
    (PENDING, False, None, Said(Heard.NOT_CONFIRMED, text="5xx"), Action(Do.NOTE, error="5xx")),
    (PENDING, False, None, Said(Heard.NOT_CONFIRMED, text="NOTENOUGH: later"),
     Action(Do.NOTE, error="NOTENOUGH: later")),
    # A refusal is final only once a query shows WeChat does not have the refund.
    (PENDING, False, None, Said(Heard.REFUSED, text=REFUSAL), Action(Do.ASK)),
    (PENDING, False, REFUSAL, Said(Heard.ABSENT), Action(Do.FAIL, error=REFUSAL)),
    (PENDING, False, REFUSAL, Said(Heard.UNDECIDED), Action(Do.NOTE, error=REFUSAL)),
    (PENDING, False, REFUSAL, Said(Heard.UNREACHABLE, text="timeout"),
     Action(Do.NOTE, error=REFUSAL)),
    # WeChat had it after all (an earlier attempt): its outcome counts, the refusal is noted.
    (PENDING, True, REFUSAL, Said(Heard.SETTLED, SETTLED),
     Action(Do.RECORD, SETTLED, error=REFUSAL)),
]  # fmt: skip


@pytest.mark.parametrize(("status", "sent_before", "refused", "said", "expected"), ROWS)
def test_next_action(
    status: RefundStatus, sent_before: bool, refused: str | None, said: Said, expected: Action
) -> None:
    assert next_action(Pass(status, sent_before, refused), said) == expected


def test_every_answer_wechat_can_give_has_a_row() -> None:
    assert {said.heard for *_, said, _ in ROWS} == set(Heard)


QUERY_ANSWERS = [
    Said(Heard.ABSENT),
    Said(Heard.UNDECIDED),
    Said(Heard.SETTLED, SETTLED),
    Said(Heard.UNREACHABLE, text="timeout"),
]
SEND_ANSWERS = [
    Said(Heard.ACCEPTED, ACCEPTED),
    Said(Heard.NOT_CONFIRMED, text="5xx"),
    Said(Heard.REFUSED, text=REFUSAL),
]


@pytest.mark.parametrize("status", [PENDING, PROCESSING])
@pytest.mark.parametrize("sent_before", [False, True])
def test_a_pass_always_ends_within_a_query_a_send_and_a_query(
    status: RefundStatus, sent_before: bool
) -> None:
    for queries in itertools.product(QUERY_ANSWERS, repeat=2):
        for send in SEND_ANSWERS:
            calls = _calls_until_done(Pass(status, sent_before), list(queries), send)
            assert calls <= 3


def _calls_until_done(state: Pass, queries: list[Said], send: Said) -> int:
    said, calls = Said(Heard.NOTHING), 0
    while (action := next_action(state, said)).do in (Do.ASK, Do.SEND):
        calls += 1
        said = queries.pop(0) if action.do is Do.ASK else send
        if said.heard is Heard.REFUSED:
            state = Pass(state.status, state.sent_before, said.text)
    return calls
