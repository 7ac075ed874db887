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
