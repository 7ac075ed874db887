"""The soak's verdicts (bench/soak_checks.py) on tiny runs written by hand: a clean run
passes every check, and each kind of failure the soak looks for makes its check fail."""

from __future__ import annotations

import pytest

from bench.soak_checks import (
    DigestMail,
    Seen,
    Sent,
    Stored,
    digest_check,
    duplicated,
    evaluate,
    first_try,
    leaks,
    lost,
    merged,
    order_violations,
    percentile,
    render,
    same_key_repeats,
    unexpected_answers,
    waits,
)

CHAT = "telegram:1001"


def sent(token: str, at: float, *, expect: str = "reply", conversation: str = CHAT,
         channel: str = "telegram", secret: str | None = None) -> Sent:
    return Sent(token, "ludo", channel, conversation, expect, at, int(at * 10),  # type: ignore[arg-type]
                secret)


def reply(token: str, at: float, key: str | None = None, *, conversation: str = CHAT,
          kind: str = "reply", channel: str = "telegram") -> Seen:
    return Seen(channel, conversation, kind, at, key or f"k-{token}-{at}", token)  # type: ignore[arg-type]


def row(token: str | None, replies: int = 1, state: str = "traite", id_: int = 0) -> Stored:
    return Stored(id_, "telegram", token, state, replies)


def clean_run() -> tuple[list[Sent], list[Seen], list[Stored]]:
    messages = [sent("aaaaa1", 1.0), sent("aaaaa2", 2.0), sent("aaaaa3", 3.0)]
    seen = [reply("aaaaa1", 1.5), reply("aaaaa2", 2.5), reply("aaaaa3", 3.5)]
    stored = [row("aaaaa1", id_=1), row("aaaaa2", id_=2), row("aaaaa3", id_=3)]
    return messages, seen, stored


def figures(messages: list[Sent], seen: list[Seen], stored: list[Stored], *,
            cloud: tuple[str, ...] = (), secrets: tuple[str, ...] = (),
            items: tuple[str, ...] = (), digests: tuple[DigestMail, ...] = ()) -> object:
    return evaluate(messages, seen, stored, secrets=secrets, cloud_texts=cloud,
                    digest_items=items, digests=list(digests), digest_recipients=["agence@x.fr"],
                    usage={"replies": 4, "local_replies": 3}, time_scale=0.01)


def test_a_clean_run_passes_every_check() -> None:
    messages, seen, stored = clean_run()
    f = evaluate(messages, seen, stored, secrets=["SECRET-00000a"],
                 cloud_texts=["nothing to hide"], digest_items=["D1"],
                 digests=[DigestMail("<m1>", ("agence@x.fr",), ("D1",))],
                 digest_recipients=["agence@x.fr"], usage={"replies": 4, "local_replies": 3},
                 time_scale=0.01)
    assert not f.failed
    assert set(f.must_be_zero.values()) == {0}
    assert (f.sent, f.received, f.expected_replies, f.answered_once) == (3, 3, 3, 3)
    assert f.share == (0.75, 3, 4)
    table = "\n".join(render(f))
    assert "FAILED" not in table
    assert "3 / 3 (100.0%)" in table


def test_a_reply_nobody_saw_is_lost_and_fails_the_run() -> None:
    messages, seen, stored = clean_run()
    f = evaluate(messages, seen[:2], stored, secrets=[], cloud_texts=[], digest_items=[],
                 digests=[], digest_recipients=[], usage={}, time_scale=0.01)
    assert f.lost == ["aaaaa3"]
    assert f.failed and f.must_be_zero["lost"] == 1
    assert "1  (must be 0: FAILED)" in "\n".join(render(f))


def test_a_stored_message_left_unanswered_is_lost_even_when_its_client_saw_a_reply() -> None:
    # the client sent it twice after a cut: one row answered, the other never
    messages = [sent("bbbbb1", 1.0, channel="site", conversation="site:v1")]
    seen = [reply("bbbbb1", 2.0, channel="site", conversation="site:v1")]
    stored = [row("bbbbb1", replies=1, id_=1), row("bbbbb1", replies=0, state="en_attente",
                                                      id_=2)]
    assert lost(messages, seen, stored) == ["bbbbb1"]


def test_held_mail_never_stored_and_a_stranger_never_told_are_lost() -> None:
    messages = [sent("ccccc1", 1.0, expect="held", channel="email", conversation="email:x"),
                sent("ccccc2", 1.0, expect="stranger", conversation="telegram:5001")]
    assert lost(messages, [], []) == ["ccccc1", "telegram:5001"]
    told = [Seen("telegram", "telegram:5001", "stranger_notice", 2.0, "tg:1")]
    assert lost(messages, told, [row("ccccc1", replies=0, state="retenu")]) == []


def test_a_reply_seen_twice_is_duplicated_but_a_mail_resent_with_its_id_is_not() -> None:
    messages, seen, stored = clean_run()
    twice = [*seen, reply("aaaaa2", 2.6, key="other")]
    assert duplicated(messages, twice, stored) == ["aaaaa2"]
    again = [*seen, reply("aaaaa2", 2.6, key=seen[1].key)]
    assert duplicated(messages, again, stored) == []
    assert same_key_repeats(again) == 1


def test_a_client_that_sent_again_after_a_cut_is_not_axis_duplicate() -> None:
    messages = [sent("ddddd1", 1.0, channel="axis", conversation="axis:axis")]
    seen = [reply("ddddd1", 2.0, key="call-2", channel="axis"),
            reply("ddddd1", 3.0, key="box-7", channel="axis")]
    stored = [row("ddddd1", id_=1), row("ddddd1", id_=2)]
    assert duplicated(messages, seen, stored) == []
    f = figures(messages, seen, stored)
    assert f.client_resends == ["ddddd1"]  # type: ignore[attr-defined]


def test_a_row_answered_twice_in_the_database_is_duplicated() -> None:
    messages, seen, stored = clean_run()
    stored[0] = row("aaaaa1", replies=2, id_=1)
    assert duplicated(messages, seen, stored) == ["aaaaa1"]


def test_a_stranger_told_twice_is_duplicated_and_a_stranger_answered_is_unexpected() -> None:
    messages = [sent("eeeee1", 1.0, expect="stranger", conversation="telegram:5001"),
                sent("eeeee2", 2.0, expect="stranger", conversation="telegram:5001")]
    notices = [Seen("telegram", "telegram:5001", "stranger_notice", 1.5, f"tg:{i}")
               for i in (1, 2)]
    assert duplicated(messages, notices, []) == ["telegram:5001"]
    assert duplicated(messages, notices[:1], []) == []
    answered = [*notices[:1], reply("eeeee2", 2.5, conversation="telegram:5001")]
    assert unexpected_answers(messages, answered, []) == ["eeeee2"]
    assert unexpected_answers(messages, notices[:1], [row("eeeee1", replies=1)]) == ["eeeee1"]


def test_a_reply_overtaking_an_earlier_ones_is_an_order_violation() -> None:
    messages, _, _ = clean_run()
    seen = [reply("aaaaa1", 1.5), reply("aaaaa3", 3.1), reply("aaaaa2", 3.2)]
    assert order_violations(messages, seen) == [(CHAT, "aaaaa3")]
    # other conversations interleave freely
    other = [sent("fffff1", 1.2, conversation="email:x", channel="email")]
    assert order_violations([*messages, other[0]],
                            [*seen[:1], reply("fffff1", 9.0, conversation="email:x",
                                              channel="email"), reply("aaaaa2", 2.5),
                             reply("aaaaa3", 3.5)]) == []


def test_a_secret_in_what_reached_the_cloud_is_a_leak() -> None:
    body = '{"messages": [{"role": "user", "content": "code SECRET-00beef"}]}'
    assert leaks(["SECRET-00beef", "SECRET-00cafe"], [body, "no secret", body]) == {
        "SECRET-00beef": 2}
    assert leaks(["SECRET-00cafe"], [body]) == {}
    messages, seen, stored = clean_run()
    f = figures(messages, seen, stored, cloud=(body,), secrets=("SECRET-00beef",))
    assert f.must_be_zero["local-only content reaching the cloud"] == 1  # type: ignore[attr-defined]
    local = evaluate(messages, seen, stored, secrets=["SECRET-00beef", "SECRET-00cafe"],
                     cloud_texts=[], digest_items=[], digests=[], digest_recipients=[],
                     usage={}, time_scale=1.0, local_texts=[body])
    assert (local.secrets, local.secrets_local, local.failed) == (2, 1, False)
    assert "2 secrets (1 read by the local model)" in "\n".join(render(local))


def test_digest_items_reported_twice_or_never() -> None:
    mails = [DigestMail("<m1>", ("agence@x.fr",), ("D1", "D2")),
             DigestMail("<m1>", ("agence@x.fr",), ("D1", "D2")),  # the same mail again
             DigestMail("<m2>", ("agence@x.fr", "ludo@x.fr"), ("D2",))]
    verdict = digest_check(["D1", "D2", "D3"], mails, ["agence@x.fr"])
    assert verdict.twice == [("agence@x.fr", "D2")]
    assert verdict.never == [("agence@x.fr", "D3")]
    assert digest_check(["D1"], mails[:1], ["agence@x.fr"]).twice == []


def test_the_wait_counts_the_simulated_cpu_at_its_simulated_length() -> None:
    messages = [sent("aaaaa1", 0.0)]
    seen = [reply("aaaaa1", 10.0, kind="draft"), reply("aaaaa1", 12.0)]
    assert waits(messages, seen, time_scale=1.0) == [10.0]  # the first visible output
    # until its first token (at 5 s) it waited for the CPU, which computed 2 s of those
    # (others' requests, then its own): 200 simulated seconds at time scale 0.01; the CPU's
    # work after that first token (someone else's) does not delay it
    busy = [(2.0, 3.0), (2.5, 4.0), (6.0, 9.0)]
    assert waits(messages, seen, time_scale=0.01, busy=busy, cpu_until={"aaaaa1": 5.0}) == \
        pytest.approx([8.0 + 200.0])
    # answered by the fallback: no first token from the local model, the wall wait
    assert waits(messages, seen, time_scale=0.01, busy=busy, cpu_until={}) == [10.0]
    assert merged([(5, 6), (1, 2), (1.5, 3)]) == [(1, 3), (5, 6)]
    assert waits([sent("aaaaa2", 0.0)], seen, time_scale=0.01) == []  # never answered


def test_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(map(float, range(101))), 95) == 95.0


def test_the_cpu_wait_is_of_messages_answered_and_sent_at_the_first_try() -> None:
    stored = [Stored(1, "telegram", "aaaaa1", "traite", 1), Stored(2, "telegram", "aaaaa2",
                                                                     "traite", 1, tries=3),
              Stored(3, "email", "aaaaa3", "traite", 1, send_tries=4),
              Stored(4, "site", "aaaaa4", "traite", 1), Stored(5, "site", "aaaaa4", "traite", 1,
                                                               tries=2)]
    assert first_try(stored) == {"aaaaa1"}
    messages, seen, _ = clean_run()
    f = evaluate(messages, seen, stored[:3], secrets=[], cloud_texts=[], digest_items=[],
                 digests=[], digest_recipients=[], usage={}, time_scale=0.5)
    assert f.waits_live == [0.5] and sorted(f.waits_retried) == [0.5, 0.5]
