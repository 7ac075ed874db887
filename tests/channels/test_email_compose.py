"""The mail Axi sends (channels/email_compose.py): threading headers, one "Re: ", our own
stable Message-ID, Auto-Submitted by kind, text + HTML, attachments, CC, Reply-To."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage

from bot.channel import Delivery, OutgoingFile
from channels.email_compose import compose, references_for, reply_subject

OURS = "axi@icidordogne.fr"


def delivery(**changes: object) -> Delivery:
    base: dict[str, object] = dict(
        message_id=42, channel="email", address="martin@example.fr",
        conversation="email:martin@example.fr", text="Bonjour Madame,\n\nLa longère est libre.",
        in_reply_to=7, thread_ref="<q1@example.fr>", kind="reply",
        thread_meta={"sujet": "RE: Re: TR: La longère de Vergt",
                     "references": ["<q0@example.fr>"]})
    base.update(changes)
    return Delivery(**base)  # type: ignore[arg-type]


def sent(d: Delivery) -> EmailMessage:
    """What the SMTP server receives, parsed back."""
    raw = compose(d, sender=OURS).as_bytes()
    parsed = message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_a_reply_threads_with_one_re_and_the_whole_chain() -> None:
    msg = sent(delivery())
    assert msg["Subject"] == "Re: La longère de Vergt"
    assert msg["In-Reply-To"] == "<q1@example.fr>"
    assert msg["References"].split() == ["<q0@example.fr>", "<q1@example.fr>"]
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["From"].addresses[0].addr_spec == OURS
    assert msg["Message-ID"].endswith("@icidordogne.fr>")
    assert sent(delivery())["Message-ID"] == msg["Message-ID"]  # a resend: the same id
    assert sent(delivery(message_id=43))["Message-ID"] != msg["Message-ID"]


def test_text_and_html_alternative_both_readable() -> None:
    msg = sent(delivery(text="Prix : 180 000 € <net vendeur> & frais"))
    plain = msg.get_body(("plain",))
    rich = msg.get_body(("html",))
    assert plain is not None and rich is not None
    assert "180 000 € <net vendeur> & frais" in plain.get_content()
    assert "&lt;net vendeur&gt; &amp; frais" in rich.get_content()


def test_a_push_is_auto_generated_with_its_subject_attachments_cc_and_reply_to() -> None:
    msg = sent(delivery(kind="push", thread_ref=None, thread_meta=None,
                        subject="Veille DPE du 30/11", cc=("anthony@icidordogne.fr",),
                        reply_to="client@example.fr",
                        attachments=(OutgoingFile("dpe.csv", "text/csv", b"a;b\n1;2\n"),)))
    assert msg["Subject"] == "Veille DPE du 30/11" and msg["In-Reply-To"] is None
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Cc"] == "anthony@icidordogne.fr" and msg["Reply-To"] == "client@example.fr"
    [part] = list(msg.iter_attachments())
    assert part.get_filename() == "dpe.csv" and part.get_content() == "a;b\n1;2\n"


def test_a_question_by_mail_lists_its_choices_and_says_mail_cannot_approve() -> None:
    msg = sent(delivery(kind="confirmation", thread_ref=None, thread_meta=None,
                        choices=(("Oui", "c:1:oui"), ("Non", "c:1:non"))))
    body = msg.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "- Oui" in text and "- Non" in text and "ne peut pas valider" in text
    assert "c:1:oui" not in text  # button data never shown


def test_subjects_and_references_edge_cases() -> None:
    assert reply_subject("") == "Re: votre message"
    assert reply_subject("Réf : Fwd: Visite") == "Re: Visite"
    assert reply_subject("Re: Re: Re:  Vente   Vergt") == "Re: Vente Vergt"
    refs = references_for({"references": [f"<r{i}@x>" for i in range(40)]}, "<last@x>")
    assert len(refs) == 20 and refs[0] == "<r0@x>" and refs[-1] == "<last@x>"
    assert references_for(None, None) == []
    long_subject = sent(delivery(subject="x" * 1000))["Subject"]
    assert len(long_subject) <= 250


OUTLOOK_ID = ("<PAXPR07MB8795A1B2C3D4E5F6A7B8C9D0E1F2A3B4C5D6@PAXPR07MB8795.eurprd07.prod"
              ".outlook.com>")


def raw_header(raw: bytes, name: str) -> str | None:
    """A header's value as it travels (unfolded, undecoded): what a mail client matches."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    for field in head.replace("\r\n ", " ").replace("\r\n\t", " ").split("\r\n"):
        key, _, value = field.partition(":")
        if key.lower() == name.lower():
            return value.strip()
    return None


def test_long_message_ids_travel_as_ids_not_encoded_words() -> None:
    # Outlook's ids are longer than a header line: the email package used to send them as
    # RFC 2047 encoded words (=?utf-8?q?=3CPAX…?=), which no client matches: thread lost
    d = delivery(thread_ref=OUTLOOK_ID,
                 thread_meta={"sujet": "Visite", "references": ["<q0@example.fr>",
                                                                OUTLOOK_ID.replace("P", "Q")]})
    raw = compose(d, sender=OURS).as_bytes()
    assert raw_header(raw, "In-Reply-To") == OUTLOOK_ID
    assert raw_header(raw, "References") == " ".join(
        ["<q0@example.fr>", OUTLOOK_ID.replace("P", "Q"), OUTLOOK_ID])
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["In-Reply-To"] == OUTLOOK_ID


def test_a_thread_id_that_is_no_message_id_is_left_out_never_sent_raw() -> None:
    raw = compose(delivery(thread_ref="<a@b>\r\nBcc: x@evil.example",
                           thread_meta={"sujet": "Visite", "references": ["bad id", "<q0@x>"]}),
                  sender=OURS).as_bytes()
    assert raw_header(raw, "In-Reply-To") is None and b"Bcc" not in raw
    assert raw_header(raw, "References") == "<q0@x>"


def test_an_encoded_word_in_a_subject_is_text_never_a_header_of_ours() -> None:
    """The email package decodes RFC 2047 words in a value it is given, and wrote their
    CR/LF out raw: a visitor's « bien » in the contact form (the relay's subject), or a
    mail's subject (the reply's), added headers — or a body — to the mail Axi sends."""
    words = "=?utf-8?q?Longere=0D=0ABcc=3A_x@evil.example=0D=0A=0D=0APayez_ici?="
    for d in (delivery(kind="notice", thread_ref=None, subject=f"Demande de contact — {words}"),
              delivery(thread_meta={"sujet": f"Visite {words}"})):
        raw = compose(d, sender=OURS).as_bytes()
        head = raw.split(b"\r\n\r\n", 1)[0]
        assert b"\r\nBcc" not in head, head.decode()
        parsed = message_from_bytes(raw, policy=policy.default)
        assert parsed["Bcc"] is None and parsed.is_multipart()  # the body is still ours
        assert words in str(parsed["Subject"])  # shown as the text it was


def test_a_reply_to_address_holding_an_encoded_word_is_left_out_not_a_crash() -> None:
    # a valid address to the contact form's check ('=' '?' and '_' are atext); the email
    # package decoded it into CR/LF and raised ValueError: not the SendError the outbox
    # expects, so the oldest message of the outbox failed at every pass, blocking the rest
    evil = "=?utf-8?q?x=0D=0ABcc=3A_y?=@evil.example"
    raw = compose(delivery(kind="notice", thread_ref=None, subject="Contact", reply_to=evil),
                  sender=OURS).as_bytes()
    assert raw_header(raw, "Reply-To") is None and b"\r\nBcc" not in raw


def test_a_recipient_the_mail_cannot_carry_is_a_permanent_send_error() -> None:
    import asyncio

    import pytest

    from bot.channel import SendError
    from channels.email import EmailChannel, EmailConfig, SmtpConfig

    channel = EmailChannel(EmailConfig(address=OURS, authserv_id=None,
                                       smtp=SmtpConfig(host="127.0.0.1", port=9, tls="none")))
    with pytest.raises(SendError) as refused:
        asyncio.run(channel.send(delivery(address="=?utf-8?q?a=0D=0A?=@evil.example")))
    assert not refused.value.retryable
