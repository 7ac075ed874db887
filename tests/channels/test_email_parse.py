"""The pure email parser (channels/email_parse.py, email_text.py, email_auth.py): real mails
of the agency's correspondents as fixtures (tests/channels/email_fixtures/), then one case per
identity rule, each failing if that rule alone were dropped, the loop guards, attachments,
charsets, quote and signature removal, and malformed input."""

from __future__ import annotations

import base64
import email
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from channels.email_parse import MailAttachment, ParsedMail, parse_mail
from channels.email_text import MAX_TEXT_CHARS, decode_bytes, html_to_text, split_reply, unflow

FIXTURES = Path(__file__).parent / "email_fixtures"
AXI = "axi@icidordogne.fr"
OURS = frozenset({AXI, "Contact@IciDordogne.fr"})
AUTHSERV = "mx.icidordogne.fr"
PARIS = timezone(timedelta(hours=1))


def parse(raw: bytes, **options: object) -> ParsedMail:
    return parse_mail(raw, our_addresses=OURS, authserv_id=AUTHSERV, **options)  # type: ignore[arg-type]


def fixture(name: str) -> ParsedMail:
    return parse((FIXTURES / name).read_bytes())


def mail(*headers: str, body: str = "Bonjour,\n\nJe voudrais visiter la maison.\n", charset: str = "utf-8",
         from_: str | None = "Marie Dupont <marie.dupont@gmail.com>") -> bytes:
    """A plain-text mail: `headers` first (in that order), then the usual ones."""
    lines = list(headers)
    if from_ is not None:
        lines.append(f"From: {from_}")
    lines += [
        f"To: {AXI}",
        "Subject: Visite",
        "Date: Tue, 4 Nov 2026 08:46:58 +0100",
        "Message-ID: <visite-1@gmail.com>",
        "MIME-Version: 1.0",
        f"Content-Type: text/plain; charset={charset}",
        "Content-Transfer-Encoding: 8bit",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body.encode(charset, errors="replace")


def ar(value: str) -> str:
    return f"Authentication-Results: {value}"


PASS_GMAIL = ar(f"{AUTHSERV}; spf=pass smtp.mailfrom=gmail.com; dkim=pass header.d=gmail.com; "
                "dmarc=pass (p=none dis=none) header.from=gmail.com")


# --- the fixtures --------------------------------------------------------------------------


def test_gmail_reply_keeps_the_new_words_and_drops_the_wrapped_french_quote() -> None:
    m = fixture("gmail_reply.eml")
    assert m.subject == "Re: Visite de la longère à Vergt"
    assert m.from_address == "marie.dupont@gmail.com"
    assert m.from_name == "Marie Dupont"
    assert m.to == (AXI,)
    assert m.message_id == "<CAJx8Qm2n5=VpLr3Kx0YtZ7wQb1cD4eF6gH8jK0lM2nP4qR6s@mail.gmail.com>"
    assert m.in_reply_to == "<20261103173201.1a2b3c4d@icidordogne.fr>"
    assert m.references == ("<20261103173201.1a2b3c4d@icidordogne.fr>",)
    assert m.date == datetime(2026, 11, 4, 8, 46, 58, tzinfo=PARIS)
    assert m.text == (
        "Bonjour,\n\n"
        "Merci pour votre réponse rapide. Samedi 8 novembre à 10h me convient très bien\n"
        "pour visiter la longère. Mon mari sera avec moi.\n\n"
        "Est-ce que le chauffage au fioul a été remplacé ?\n\n"
        "Bien cordialement,\nMarie Dupont"
    )
    assert "> 198 000 € FAI." in m.full_text and "<axi@icidordogne.fr> a\nécrit" in m.full_text  # kept there
    assert m.auth.verified and m.auth.reason == "dmarc=pass by mx.icidordogne.fr" and not m.auth.forged
    assert m.no_reply is None and m.forwarded_from is None and m.attachments == ()
    assert m.problems == ()


def test_outlook_reply_in_windows_1252_drops_the_de_envoye_block() -> None:
    m = fixture("outlook_reply.eml")
    assert m.subject == "RE: Compromis maison du Bugue"
    assert m.from_address == "sophie.martin@outlook.fr"
    assert m.to == (AXI, "ludo@icidordogne.fr")  # To + Cc
    assert m.date == datetime(2026, 11, 4, 8, 15, 37, tzinfo=UTC)
    assert m.text == (
        "Bonjour,\n\n"
        "Je vous confirme le rendez-vous de jeudi 6 novembre à 14h30 chez Maître Durand pour le compromis.\n"
        "Pourriez-vous m’envoyer le diagnostic électrique avant ? "
        "Le prix reste bien à 185 000 €, frais d’agence inclus ?\n\n"
        "Cordialement,\n\nSophie Martin"
    )
    assert "Envoyé : lundi 3 novembre 2026 10:02" in m.full_text
    assert "Le notaire propose" in m.full_text and "Le notaire propose" not in m.text
    assert m.auth.verified and m.no_reply is None and m.problems == ()


def test_apple_mail_quoted_printable_drops_the_iphone_signature_and_quote() -> None:
    m = fixture("apple_mail.eml")
    assert m.subject == "Re : Visite de la grange"  # the no-break space became a space
    assert m.from_address == "pierre.lambert@icloud.com"
    assert m.text == (
        "Bonjour,\n\n"
        "Oui, samedi 10h c’est parfait pour la visite de la grange à Saint-Cyprien. "
        "Nous viendrons à deux voitures, est-ce qu’on peut se garer devant ?"
    )
    assert "Envoyé de mon iPhone" in m.full_text and "Monsieur Lambert" in m.full_text
    assert m.auth.verified


def test_html_only_mail_becomes_clean_text() -> None:
    m = fixture("html_only.eml")
    assert m.subject == "Maison à Saint-Cyprien réf. SC-2026-118"
    assert m.text == (
        "Bonjour,\n\n"
        "Je souhaiterais visiter la maison de Saint-Cyprien (réf. SC-2026-118) vue sur votre site.\n"
        "Serait-il possible de venir mardi 11 novembre en fin de matinée ?\n\n"
        "* Budget : 230 000 €\n"
        "* Financement : accord de principe de la banque\n\n"
        "Merci d'avance,\nClaire Bernard\n06 71 42 18 93"
    )
    for leftover in ("<", "font-family", "document.write", "ne pas afficher", "&nbsp;"):
        assert leftover not in m.full_text


def test_latin1_mail_and_its_flowed_lines() -> None:
    m = fixture("latin1.eml")
    assert m.subject == "Terrain à bâtir à Vergt"
    assert m.from_name == "André Moreau"
    assert m.text == (
        "Bonjour,\n\n"
        "Je suis intéressé par le terrain à bâtir de Vergt (1 850 m²) vu sur votre site. "
        "Est-il toujours disponible ? Le certificat d'urbanisme a-t-il été délivré ?\n\n"
        "Bien à vous,\nAndré Moreau"
    )
    assert m.problems == ()


def test_windows_1252_mislabelled_utf8_is_read_and_noted() -> None:
    m = fixture("mislabelled_utf8_is_cp1252.eml")
    assert "J’aimerais faire estimer ma maison à Mauzens-et-Miremont : 120 m²" in m.text
    assert "160 000 € l’été dernier" in m.text and "Êtes-vous disponibles" in m.text
    assert "\ufffd" not in m.text
    assert m.problems == ("declared utf-8 but the text is not utf-8: read as windows-1252",)


def test_gmail_forward_keeps_the_forwarded_words_and_names_their_author() -> None:
    m = fixture("forwarded.eml")
    assert m.forwarded_from == "Marie Lefèvre <marie.lefevre@orange.fr>"
    own = ("Axi, peux-tu répondre à cette dame ? Elle cherche une maison avec piscine, "
           "regarde ce qu’on a au Bugue.")
    assert m.text.startswith(own + "\n\n---------- Message transféré ---------\n")
    assert "budget 250 000 €" in m.text  # someone else's words stay, marked
    assert m.forwarded_text.startswith("---------- Message transféré ---------")
    assert m.text == own + "\n\n" + m.forwarded_text
    assert m.from_address == "julie.roche.icidordogne@gmail.com" and m.auth.verified


def test_forward_as_attachment_gives_the_inner_author_text_and_attachments() -> None:
    m = fixture("forwarded_rfc822.eml")
    assert m.forwarded_from == "Maître Durand <etude.durand@notaires.fr>"
    own = "Axi, classe ça dans le dossier Lambert et rappelle-moi la date de signature la veille."
    assert m.text.startswith(own + "\n\n---------- Message transféré ---------\nDe : Maître Durand")
    assert "Objet : Projet d'acte - vente Lambert" in m.text
    assert "La signature\nest prévue le 14 novembre à 10h à l'étude." in m.text
    assert "Ludo\nICI Dordogne" not in m.text  # Ludo's signature, before the forward
    assert m.text == own + "\n\n" + m.forwarded_text
    [pdf] = m.attachments  # the forwarded mail's own attachment; the .eml itself is the text
    assert (pdf.filename, pdf.content_type) == ("Projet acte Lambert.pdf", "application/pdf")
    assert pdf.missing is None
    assert pdf.data is not None and pdf.data.startswith(b"%PDF-1.4") and pdf.size == len(pdf.data)
    assert m.auth.verified and m.from_address == "ludo@icidordogne.fr"


def test_auto_reply_is_never_answered() -> None:
    m = fixture("auto_reply.eml")
    assert m.subject == "Réponse automatique : absent"
    assert m.no_reply == "auto-submitted: auto-replied"


def test_bounce_is_never_answered() -> None:
    m = fixture("bounce.eml")
    assert m.from_address == "MAILER-DAEMON@mx.icidordogne.fr"
    assert m.no_reply == "bounce"
    assert "Recipient address rejected: User unknown" in m.text
    assert not m.auth.verified and m.auth.reason == "no Authentication-Results"


def test_newsletter_is_never_answered() -> None:
    m = fixture("newsletter.eml")
    assert m.from_name == "Le Journal de l’Immobilier"
    assert m.no_reply == "precedence: bulk"
    assert m.text.startswith("La lettre du 7 novembre 2026")


def test_spoofed_ludo_without_authentication_results_is_unverified() -> None:
    m = fixture("spoof_ludo_no_auth.eml")
    assert m.from_address == "ludo@icidordogne.fr" and m.from_name == "Ludo"
    assert m.auth == m.auth.__class__(verified=False, reason="no Authentication-Results", forged=False)
    assert m.no_reply is None  # a stranger may be answered, as a stranger


def test_spoofed_ludo_vouched_for_by_a_foreign_server_is_unverified() -> None:
    m = fixture("spoof_ludo_foreign_auth.eml")
    assert not m.auth.verified
    assert m.auth.reason == "topmost Authentication-Results is from mx.evil.example"
    assert not m.auth.forged


def test_spoofed_ludo_with_a_forged_lower_header_is_unverified_and_flagged() -> None:
    m = fixture("spoof_ludo_lower_forged.eml")
    assert not m.auth.verified and m.auth.reason == "dmarc=fail"
    assert m.auth.forged
    assert "a lower Authentication-Results header bears our authserv-id" in m.problems


def test_the_real_ludo_is_verified_and_his_signature_dropped() -> None:
    m = fixture("ludo_real.eml")
    assert m.auth.verified and not m.auth.forged
    assert m.from_address == "ludo@icidordogne.fr"
    assert m.subject == "Veille DPE : ajoute Saint-Michel-de-Villadeix"
    assert m.text == (
        "Salut Axi,\n\nAjoute Saint-Michel-de-Villadeix à la veille DPE de Vergt, et envoie-moi\n"
        "le résumé vendredi plutôt que lundi.\n\nMerci !"
    )
    assert m.full_text.endswith("--\nLudo\nICI Dordogne - Le Bugue / Vergt\n06 12 34 56 78")  # "-- " trimmed


def test_client_attachments_pdf_with_rfc2231_name_and_inline_jpeg() -> None:
    m = fixture("client_with_attachment.eml")
    assert m.from_address == "Helene.Vasseur@sfr.fr"  # domain lower-cased, local part as written
    assert m.from_name == "Hélène Vasseur"
    assert m.to == (AXI, "contact@icidordogne.fr")
    photo, dpe = m.attachments
    assert (photo.filename, photo.content_type, photo.size) == ("facade.jpg", "image/jpeg", 450)
    assert photo.data is not None and photo.data.startswith(b"\xff\xd8\xff\xe0")
    assert (dpe.filename, dpe.content_type) == ("Diagnostic énergétique - Vergt.pdf", "application/pdf")
    assert dpe.size == 626
    assert dpe.data is not None and dpe.data.startswith(b"%PDF-1.4") and dpe.missing is None
    assert m.text.startswith("Bonjour,\n\nComme convenu, voici le diagnostic")
    assert m.text.endswith("Cordialement,\nHélène Vasseur")
    assert m.no_reply is None  # contact@ is ours, but only as a recipient


# --- identity: one case per rule --------------------------------------------------------------


def test_verified_when_our_topmost_header_says_dmarc_pass_for_the_from_domain() -> None:
    m = parse(mail(PASS_GMAIL))
    assert m.auth.verified and m.auth.reason == "dmarc=pass by mx.icidordogne.fr"


def test_only_the_topmost_header_counts() -> None:
    # Our server's real verdict (topmost) is a fail; a pass of ours further down was
    # inserted by the sender. Counting any header of ours would verify it.
    m = parse(mail(ar(f"{AUTHSERV}; dmarc=fail header.from=gmail.com"), PASS_GMAIL))
    assert not m.auth.verified and m.auth.reason == "dmarc=fail" and m.auth.forged


def test_a_foreign_topmost_header_is_not_skipped_to_reach_ours() -> None:
    # Our MX prepends its header: if the topmost is someone else's, ours lower down is fake.
    m = parse(mail(ar("mx.evil.example; dmarc=pass header.from=gmail.com"), PASS_GMAIL))
    assert not m.auth.verified and m.auth.forged
    assert m.auth.reason == "topmost Authentication-Results is from mx.evil.example"


def test_the_authserv_id_must_be_ours() -> None:
    m = parse(mail(ar("mx.icidordogne.fr.evil.example; dmarc=pass header.from=gmail.com")))
    assert not m.auth.verified


def test_the_authserv_id_is_compared_case_insensitively() -> None:
    m = parse(mail(ar("MX.IciDordogne.FR; dmarc=pass header.from=gmail.com")))
    assert m.auth.verified


def test_dmarc_must_pass() -> None:
    m = parse(mail(ar(f"{AUTHSERV}; spf=pass smtp.mailfrom=gmail.com; dkim=pass header.d=gmail.com; "
                      "dmarc=fail header.from=gmail.com")))
    assert not m.auth.verified and m.auth.reason == "dmarc=fail"


def test_spf_and_dkim_without_dmarc_are_not_enough() -> None:
    m = parse(mail(ar(f"{AUTHSERV}; spf=pass smtp.mailfrom=gmail.com; dkim=pass header.d=gmail.com")))
    assert not m.auth.verified and m.auth.reason == "no dmarc result"


def test_dmarc_must_be_for_the_from_domain() -> None:
    m = parse(mail(ar(f"{AUTHSERV}; dmarc=pass header.from=evil.example")))
    assert not m.auth.verified
    assert m.auth.reason == "header.from evil.example != From domain gmail.com"


def test_a_subdomain_is_another_domain() -> None:
    m = parse(mail(ar(f"{AUTHSERV}; dmarc=pass header.from=mail.icidordogne.fr"),
                   from_="Ludo <ludo@icidordogne.fr>"))
    assert not m.auth.verified


def test_header_from_is_compared_case_insensitively() -> None:
    m = parse(mail(ar(f"{AUTHSERV}; dmarc=pass header.from=GMail.COM"),
                   from_="Marie <Marie.Dupont@GMAIL.com>"))
    assert m.auth.verified and m.from_address == "Marie.Dupont@gmail.com"


@pytest.mark.parametrize("clause", ["dmarc=pass", "dmarc=pass header.from=", "dmarc=pass policy.dmarc=none"])
def test_dmarc_pass_without_header_from_is_not_enough(clause: str) -> None:
    m = parse(mail(ar(f"{AUTHSERV}; {clause}")))
    assert not m.auth.verified and m.auth.reason == "dmarc=pass without header.from"


def test_a_pass_next_to_a_fail_for_the_same_domain_is_not_enough() -> None:
    m = parse(mail(ar(f"{AUTHSERV}; dmarc=pass header.from=gmail.com; dmarc=fail header.from=gmail.com")))
    assert not m.auth.verified


def test_a_lower_header_with_our_id_is_flagged_even_when_the_topmost_passes() -> None:
    m = parse(mail(PASS_GMAIL, ar(f"{AUTHSERV}; dmarc=pass header.from=icidordogne.fr")))
    assert m.auth.verified and m.auth.forged  # the topmost decides; the forgery is logged


def test_a_malformed_forgery_is_still_flagged() -> None:
    m = parse(mail(PASS_GMAIL, ar(f"(faux) {AUTHSERV.upper()}; dmarc=pass header.from=((")))
    assert m.auth.forged


def test_two_from_addresses_are_not_verified() -> None:
    m = parse(mail(PASS_GMAIL, from_="Marie Dupont <marie.dupont@gmail.com>, Ludo <ludo@icidordogne.fr>"))
    assert not m.auth.verified and m.auth.reason == "more than one From address"
    assert m.from_address == "marie.dupont@gmail.com"


def test_two_from_headers_are_not_verified() -> None:
    m = parse(mail(PASS_GMAIL, "From: Ludo <ludo@icidordogne.fr>"))
    assert not m.auth.verified and m.auth.reason == "more than one From header"


@pytest.mark.parametrize(
    "from_", ["Marie Dupont", "<>", "marie.dupont@", "@gmail.com", '"Marie" <marie dupont@gmail.com>']
)
def test_an_unparsable_from_is_not_verified(from_: str) -> None:
    m = parse(mail(PASS_GMAIL, from_=from_))
    assert not m.auth.verified and m.from_address is None


def test_no_from_is_not_verified() -> None:
    m = parse(mail(PASS_GMAIL, from_=None))
    assert not m.auth.verified and m.from_address is None and m.no_reply == "no sender address"


@pytest.mark.parametrize("value", [f"{AUTHSERV} dmarc=pass header.from=gmail.com",
                                   f"{AUTHSERV}; dmarc=pass header.from=gmail.com; (",
                                   f"{AUTHSERV}; dmarc"])
def test_an_unparsable_header_is_not_verified(value: str) -> None:
    m = parse(mail(ar(value)))
    assert not m.auth.verified
    assert m.auth.reason == "unparsable topmost Authentication-Results (SyntaxError)"


def test_a_property_authres_cannot_read_is_no_header_from() -> None:
    m = parse(mail(ar(f"{AUTHSERV}; dmarc=pass header.from=gmail.com (unclosed")))
    assert not m.auth.verified and m.auth.reason == "dmarc=pass without header.from"


def test_arc_authentication_results_do_not_count() -> None:
    m = parse(mail(f"ARC-Authentication-Results: i=1; {AUTHSERV}; dmarc=pass header.from=gmail.com"))
    assert not m.auth.verified and m.auth.reason == "no Authentication-Results"


def test_the_display_name_never_identifies() -> None:
    m = parse(mail(ar(f"{AUTHSERV}; dmarc=pass header.from=evil.example"),
                   from_='"ludo@icidordogne.fr" <boss@evil.example>'))
    assert m.auth.verified and m.from_address == "boss@evil.example"
    assert m.from_name == "ludo@icidordogne.fr"


def test_encoded_words_in_a_lower_header_do_not_hide_a_forgery_or_make_one() -> None:
    m = parse(mail(PASS_GMAIL, ar("=?utf-8?q?mx.icidordogne.fr?=; dmarc=pass header.from=gmail.com")))
    assert m.auth.verified and not m.auth.forged  # raw value: its id is the encoded word


# --- no_reply ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "from_", "subject", "reason"),
    [
        ((), "Axi <AXI@icidordogne.fr>", "Visite", "our own address"),
        (("Auto-Submitted: auto-replied",), "Axi <axi@icidordogne.fr>", "Visite", "our own address"),
        (("Auto-Submitted: auto-generated (digest)",), None, "Visite", "auto-submitted: auto-generated"),
        (("Auto-Submitted: no", "Precedence: junk"), None, "Visite", "precedence: junk"),
        (("Precedence: list", "List-Id: <a.b>"), None, "Visite", "precedence: list"),
        (("List-Id: Annonces <annonces.icidordogne.fr>",), None, "Visite", "mailing list"),
        (("List-Unsubscribe: <mailto:u@x.fr>",), None, "Visite", "mailing list"),
        (("Return-Path: <>",), None, "Visite", "bounce"),
        ((), "postmaster@orange.fr", "Visite", "bounce"),
        ((), "Mailer-Daemon@gmail.com", "Visite", "bounce"),
        (("X-Auto-Response-Suppress: OOF, AutoReply",), None, "Visite", "x-auto-response-suppress"),
        ((), "Leboncoin <no-reply@leboncoin.fr>", "Visite", "no-reply sender"),
        ((), "ne-pas-repondre@impots.gouv.fr", "Visite", "no-reply sender"),
        ((), "NePasRepondre@caf.fr", "Visite", "no-reply sender"),
        ((), "do_not_reply@seloger.com", "Visite", "no-reply sender"),
        ((), "noreply+alerts@github.com", "Visite", "no-reply sender"),
        (("X-Autoreply: yes",), None, "Visite", "auto-reply"),
        (("X-Autorespond: Vacation",), None, "Visite", "auto-reply"),
        ((), None, "Réponse automatique : Visite", "auto-reply"),
        ((), None, "Automatic reply: Visite", "auto-reply"),
        ((), None, "Out of Office: back on Monday", "auto-reply"),
        ((), None, "Absence : retour le 12 novembre", "auto-reply"),
        ((), None, "Absence de chauffage dans la maison", None),
        ((), None, "Visite de la maison", None),
    ],
)
def test_loop_and_abuse_guards(
    headers: tuple[str, ...], from_: str | None, subject: str, reason: str | None
) -> None:
    raw = mail(*headers, from_=from_ or "Marie Dupont <marie.dupont@gmail.com>")
    raw = raw.replace(b"Subject: Visite\r\n", f"Subject: {subject}\r\n".encode())
    assert parse(raw).no_reply == reason


def test_multipart_report_is_a_bounce() -> None:
    raw = mail().replace(b"Content-Type: text/plain; charset=utf-8",
                         b"Content-Type: multipart/report; report-type=delivery-status; boundary=b")
    assert parse(raw).no_reply == "bounce"


# --- attachments --------------------------------------------------------------------------------


def multipart(*parts: bytes, subtype: str = "mixed", headers: str = "") -> bytes:
    body = b"".join(b"--XyZ\r\n" + part + b"\r\n" for part in parts) + b"--XyZ--\r\n"
    return (
        f"From: Marie Dupont <marie.dupont@gmail.com>\r\nTo: {AXI}\r\nSubject: Documents\r\n{headers}"
        f"MIME-Version: 1.0\r\nContent-Type: multipart/{subtype}; boundary=XyZ\r\n\r\n"
    ).encode() + body


TEXT_PART = b"Content-Type: text/plain; charset=utf-8\r\n\r\nVoici les documents.\r\n"


def b64_part(data: bytes, headers: str) -> bytes:
    return (headers + "Content-Transfer-Encoding: base64\r\n\r\n").encode() + base64.encodebytes(data)


def test_an_attachment_over_the_limit_is_measured_not_kept() -> None:
    big = bytes(range(256)) * (22 * 4096)  # 22 Mo
    headers = 'Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="Plans.pdf"\r\n'
    m = parse(multipart(TEXT_PART, b64_part(big, headers)))
    [att] = m.attachments
    assert att == MailAttachment("Plans.pdf", "application/pdf", len(big), None, "trop volumineux (22 Mo)")
    assert m.text == "Voici les documents."


def test_the_attachment_limit_is_a_parameter() -> None:
    m = parse(multipart(TEXT_PART, b64_part(b"x" * 3000, "Content-Type: image/png; name=plan.png\r\n")),
              max_attachment_bytes=1000)
    assert m.attachments == (MailAttachment("plan.png", "image/png", 3000, None, "trop volumineux (3 Ko)"),)


def test_bad_base64_gives_an_unreadable_attachment_and_a_problem() -> None:
    part = (b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=acte.pdf\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK!!!%%%n'importe quoi***\r\n")
    m = parse(multipart(TEXT_PART, part))
    [att] = m.attachments
    assert att.filename == "acte.pdf" and att.data is None and att.missing == "illisible"
    assert "attachment 'acte.pdf': invalid base64" in m.problems


def test_encoded_word_filename_and_paths_are_cleaned() -> None:
    m = parse(multipart(TEXT_PART,
                        b64_part(b"%PDF", 'Content-Type: application/pdf\r\nContent-Disposition: attachment; '
                                          'filename="=?UTF-8?Q?Compromis_sign=C3=A9.pdf?="\r\n'),
                        b64_part(b"x", "Content-Type: text/plain\r\n"
                                       'Content-Disposition: attachment; filename="../../etc/passwd"\r\n')))
    assert [a.filename for a in m.attachments] == ["Compromis signé.pdf", "passwd"]
    assert m.text == "Voici les documents."  # the attached text is not body text


def test_an_html_alternative_does_not_hide_an_image_from_the_plain_text() -> None:
    related = (b"Content-Type: multipart/related; boundary=R\r\n\r\n--R\r\n"
               b"Content-Type: text/html; charset=utf-8\r\n\r\n"
               b"<p>Voici la photo.</p><img src=cid:p1>\r\n--R\r\n"
               + b64_part(b"\xff\xd8\xff", "Content-Type: image/jpeg\r\nContent-ID: <p1>\r\n"
                                           "Content-Disposition: inline; filename=grange.jpg\r\n")
               + b"\r\n--R--\r\n")
    m = parse(multipart(b"Content-Type: text/plain; charset=utf-8\r\n\r\nVoici la photo.\r\n", related,
                        subtype="alternative"))
    assert m.text == "Voici la photo."
    assert [(a.filename, a.data) for a in m.attachments] == [("grange.jpg", b"\xff\xd8\xff")]


def test_an_empty_plain_alternative_falls_back_on_the_html() -> None:
    m = parse(multipart(b"Content-Type: text/plain\r\n\r\n \r\n",
                        b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>Bonjour <b>Axi</b></p>\r\n",
                        subtype="alternative"))
    assert m.text == "Bonjour Axi"


def test_parts_past_max_parts_are_ignored_and_noted() -> None:
    parts = [b64_part(b"%d" % i, f"Content-Type: image/png; name=p{i}.png\r\n") for i in range(50)]
    m = parse(multipart(TEXT_PART, *parts), max_parts=20)
    assert len(m.attachments) == 18  # the multipart, the text and 18 images make 20 parts
    assert "more than 20 MIME parts: the rest ignored" in m.problems


# --- charsets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "charset", "text", "problem"),
    [
        ("Été à Vergt".encode(), "utf-8", "Été à Vergt", None),
        ("Été à Vergt, 180 000 €".encode("cp1252"), "iso-8859-1", "Été à Vergt, 180 000 €", None),
        ("Été à Vergt, 180 000 €".encode("iso-8859-15"), "iso-8859-15", "Été à Vergt, 180 000 €", None),
        ("l’été".encode("cp1252"), "windows-1252", "l’été", None),
        ("Été".encode(), "iso-8859-1", "Été", "declared iso-8859-1 but the text is utf-8"),
        ("Été".encode(), "us-ascii", "Été", "declared us-ascii but the text is utf-8"),
        ("Été".encode("cp1252"), "us-ascii", "Été",
         "declared us-ascii but the text is not utf-8: read as windows-1252"),
        ("Été".encode(), "x-mac-inconnu", "Été", "unknown charset 'x-mac-inconnu'"),
        ("Été".encode("cp1252"), None, "Été",
         "undeclared charset and the text is not utf-8: read as windows-1252"),
        ("Déjà vu, ça".encode() + b" \xe9t\xe9", "utf-8", "Déjà vu, ça été",
         "declared utf-8 but the text is not utf-8: read as windows-1252"),
        (b"\x81\xe9", "utf-8", "\ufffdé", "declared utf-8 but the text is not utf-8: read as windows-1252"),
        ("Été".encode("utf-16"), "utf-16", "Été", None),
        (b"abc", "punycode", "abc", "unknown charset 'punycode'"),
    ],
)
def test_decode_bytes(data: bytes, charset: str | None, text: str, problem: str | None) -> None:
    assert decode_bytes(data, charset) == (text, problem)


@pytest.mark.parametrize("encoding", ["utf-8", "cp1252"])
def test_8bit_headers_in_utf8_or_latin1_are_read(encoding: str) -> None:
    raw = mail(from_="Jerome Fargeot <jerome@orange.fr>", charset=encoding)
    raw = raw.replace(b"Subject: Visite", "Subject: Visite de la maison à Vergt".encode(encoding))
    raw = raw.replace(b"From: Jerome", "From: Jérôme".encode(encoding))
    m = parse(raw)
    assert (m.subject, m.from_name, m.from_address) == (
        "Visite de la maison à Vergt", "Jérôme Fargeot", "jerome@orange.fr")


# --- quotes and signatures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "own"),
    [
        ("Oui, d'accord.\n\nLe lun. 3 nov. 2026 à 10:02, Ludo <ludo@icidordogne.fr> a écrit :\n"
         "> Tu viens ?\n",
         "Oui, d'accord."),
        ("Oui.\n\nLe 03/11/2026 à 10:02, Ludo a écrit :\nTu viens ?\n", "Oui."),
        ("Yes, fine.\n\nOn Mon, Nov 3, 2026 at 10:02 AM Ludo <ludo@icidordogne.fr> wrote:\n> Coming?\n",
         "Yes, fine."),
        ("Yes.\n\nOn 3 Nov 2026, at 10:02, Ludo <ludo@icidordogne.fr>\nwrote:\n\n> Coming?\n", "Yes."),
        ("OK pour moi.\n\nDe : Ludo <ludo@icidordogne.fr>\nEnvoyé : lundi 3 novembre 2026 10:02\n"
         "À : Axi <axi@icidordogne.fr>\nObjet : Visite\n\nTu viens ?\n", "OK pour moi."),
        ("Fine.\n\nFrom: Ludo <ludo@icidordogne.fr>\nSent: Monday, November 3, 2026 10:02 AM\n"
         "To: Axi <axi@icidordogne.fr>\nSubject: Visit\n\nComing?\n", "Fine."),
        ("Entendu.\n\n-----Message d'origine-----\nDe : Ludo\nTu viens ?\n", "Entendu."),
        ("Done.\n\n-----Original Message-----\nFrom: Ludo\nComing?\n", "Done."),
        ("Merci.\n\n________________________________\nDe : Ludo\nTu viens ?\n", "Merci."),
        ("Merci.\n-- \nJean Dupont\n06 12 34 56 78\n", "Merci."),
        ("Merci.\n\nEnvoyé depuis mon mobile Orange\n", "Merci."),
        ("Merci.\n\nObtenir Outlook pour Android<https://aka.ms/AAb9ysg>\n", "Merci."),
        ("Merci.\n\nSent from my iPhone\n", "Merci."),
        ("> Le prix ?\n185 000 €.\n> Les charges ?\n900 € par an.\n", "185 000 €.\n900 € par an."),
        ("Le 12 mars, le notaire nous a dit que tout allait bien.\nMerci.\n",
         "Le 12 mars, le notaire nous a dit que tout allait bien.\nMerci."),
        ("De : 9 h à 12 h, c'est possible.\nMerci.\n", "De : 9 h à 12 h, c'est possible.\nMerci."),
    ],
)
def test_split_reply(body: str, own: str) -> None:
    split = split_reply(body, "Re: Visite")
    assert (split.own, split.forwarded, split.forwarded_from) == (own, "", None)


def test_an_outlook_forward_is_a_forward_not_a_quote() -> None:
    body = ("Pour info.\n\n________________________________\nDe : Marie Dupont <marie@orange.fr>\n"
            "Envoyé : lundi 3 novembre 2026 10:02\nÀ : Ludo\nObjet : Maison\n\nJe vends ma maison.\n")
    split = split_reply(body, "TR: Maison")
    assert split.own == "Pour info."
    assert split.forwarded_from == "Marie Dupont <marie@orange.fr>"
    assert split.forwarded.endswith("Je vends ma maison.")


def test_a_forward_with_an_unknown_author() -> None:
    split = split_reply("Regarde.\n\n---------- Forwarded message ---------\nBonjour\n", "Fwd: x")
    assert (split.own, split.forwarded_from) == ("Regarde.", "")


def test_a_forward_marker_inside_a_quote_is_history_not_a_forward() -> None:
    body = ("Merci !\n\nLe 3 nov. 2026 à 10:02, Julie a écrit :\n"
            "> ---------- Message transféré ---------\n> De : X\n")
    assert split_reply(body, "Re: Fwd: x") == split_reply("Merci !", "")


def test_only_quotes_keep_the_whole_text() -> None:
    m = parse(mail(body="> Vous venez samedi ?\n> Ludo\n"))
    assert m.text == m.full_text == "> Vous venez samedi ?\n> Ludo"


@pytest.mark.parametrize(
    ("name", "own_start", "own_end", "author"),
    [
        ("gmail_reply.eml", "Bonjour,\n\nMerci pour votre réponse", "cordialement,\nMarie Dupont", None),
        ("outlook_reply.eml", "Bonjour,\n\nJe vous confirme", "Cordialement,\n\nSophie Martin", None),
        ("forwarded.eml", "Axi, peux-tu répondre", "au Bugue.", "Marie Lefèvre <marie.lefevre@orange.fr>"),
    ],
)
def test_the_html_alternatives_split_like_the_plain_ones(
    name: str, own_start: str, own_end: str, author: str | None
) -> None:
    message = email.message_from_bytes((FIXTURES / name).read_bytes(), policy=email.policy.default)
    [html] = [p.get_content() for p in message.walk() if p.get_content_type() == "text/html"]
    text, problem = html_to_text(html)
    split = split_reply(text, str(message["subject"]))
    assert problem is None
    assert split.own.startswith(own_start) and split.own.endswith(own_end)
    assert split.forwarded_from == author


def test_format_flowed_joins_soft_breaks_by_quote_depth() -> None:
    flowed = "Je suis \nintéressé.\n> Le prix \n> est bas.\n>> a\n-- \nJean"
    assert unflow(flowed) == "Je suis intéressé.\n> Le prix est bas.\n>> a\n-- \nJean"
    assert unflow("ab \ncd", delsp=True) == "abcd"


def test_a_forward_inside_a_forward_stays_in_its_text() -> None:
    inner = b"From: Notaire <n@notaires.fr>\r\nSubject: Acte\r\n\r\nLe projet d'acte.\r\n"
    middle = (b"From: Julie <julie@icidordogne.fr>\r\nSubject: TR: Acte\r\n"
              b"Content-Type: multipart/mixed; boundary=M\r\n\r\n--M\r\n\r\nPour Ludo.\r\n--M\r\n"
              b"Content-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--M--\r\n")
    m = parse(multipart(b"Content-Type: text/plain\r\n\r\nA classer.\r\n",
                        b"Content-Type: message/rfc822\r\n\r\n" + middle))
    assert m.forwarded_from == "Julie <julie@icidordogne.fr>"
    assert m.text.startswith("A classer.\n\n---------- Message transféré ---------\nDe : Julie")
    text = m.text
    assert text.index("Pour Ludo.") < text.index("De : Notaire <n@notaires.fr>") < text.index("Le projet")


# --- malformed input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x00" * 100, b"garbage without headers", b"From:\r\n\r\n", b"\xff\xfe\xfd" * 1000,
     b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--\r\n",
     b"Content-Type: multipart/mixed\r\n\r\nno boundary at all\r\n",
     b"Content-Type: message/rfc822\r\n\r\n",
     b"Content-Type: text/plain; charset=\"\x00\xff\"\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!\r\n",
     b"From: " + b"(" * 5000 + b"\r\nSubject: " + b"=?utf-8?q?" * 3000 + b"\r\n\r\nx"],
)
def test_broken_input_still_gives_a_parsed_mail(raw: bytes) -> None:
    m = parse(raw)
    assert isinstance(m, ParsedMail) and not m.auth.verified


def test_nul_bytes_are_removed_from_the_text() -> None:
    m = parse(mail(body="Bon\x00jour\x00 Axi"))
    assert m.text == "Bonjour Axi"


def test_the_text_is_capped() -> None:
    m = parse(mail(body="Un très long message. " * 20_000))
    assert len(m.full_text) == MAX_TEXT_CHARS and len(m.text) <= MAX_TEXT_CHARS
    assert f"text cut to {MAX_TEXT_CHARS} characters" in m.problems


def test_a_long_forward_is_cut_as_someone_elses_words() -> None:
    body = "Voir.\n\n---------- Forwarded message ---------\nFrom: X <x@y.fr>\n\n" + "bla " * 100_000
    m = parse(mail("Subject: Fwd: x", body=body))
    assert len(m.text) == MAX_TEXT_CHARS and m.text.endswith(m.forwarded_text)
    assert m.text[: len(m.text) - len(m.forwarded_text)] == "Voir.\n\n"
    assert m.forwarded_from == "X <x@y.fr>"


def test_deeply_nested_multiparts_keep_the_headers() -> None:
    raw = b"From: Marie <marie@gmail.com>\r\nSubject: Profond\r\n"
    raw += b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
    nested = b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n"
    raw += b"".join(nested % (i, i + 1) for i in range(3000))
    m = parse(raw)
    assert m.subject == "Profond" and m.from_address == "marie@gmail.com"
    assert m.problems


def test_ids_garbage_and_many_references() -> None:
    ids = " ".join(f"<id{i}@x.fr>" for i in range(300))
    m = parse(mail("Message-ID: garbage with spaces", f"References: {ids}", "In-Reply-To: bare@x.fr"))
    assert m.message_id is None  # the first Message-ID is garbage
    assert m.in_reply_to == "<bare@x.fr>"
    assert len(m.references) == 100 and m.references[0] == "<id0@x.fr>" and m.references[-1] == "<id299@x.fr>"


def test_a_naive_date_is_taken_as_utc_and_a_bad_one_is_none() -> None:
    assert parse(mail().replace(b"+0100", b"-0000")).date == datetime(2026, 11, 4, 8, 46, 58, tzinfo=UTC)
    m = parse(mail().replace(b"Tue, 4 Nov 2026 08:46:58 +0100", b"demain matin"))
    assert m.date is None and "Date unparsable" in m.problems
