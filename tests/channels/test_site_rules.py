"""The site's pure rules (channels/site_rules.py): reading the legacy chat body, the
visitor key, `#memo`, the contact form's French validation, the honeypot and CORS."""

from __future__ import annotations

import pytest

from channels.site_rules import (
    Invalid,
    clean_site_id,
    cors_verdict,
    is_robot,
    memo_text,
    parse_chat,
    plain,
    plausible_phone,
    preflight_headers,
    site_of_origin,
    validate_contact,
    visitor_key,
)

pytestmark = pytest.mark.nodb

LEGACY = {
    "system": "Tu es l'assistant d'ICI Dordogne. Réponds en 3 phrases.",
    "messages": [
        {"role": "user", "content": "Bonjour, la maison de Vergt est-elle encore à vendre ?"},
        {"role": "assistant", "content": "Bonjour ! Oui, elle l'est."},
        {"role": "user", "content": "Peut-on la visiter samedi ?"},
    ],
    "site_id": "icidordogne",
}


def test_the_legacy_body_gives_the_site_the_first_and_the_last_user_message() -> None:
    asked = parse_chat(LEGACY)
    assert asked.site_id == "icidordogne"
    assert asked.first_user.startswith("Bonjour, la maison de Vergt")
    assert asked.last_user == "Peut-on la visiter samedi ?"
    assert not hasattr(asked, "system")  # the site's system text is never taken


def test_the_turns_before_the_last_message_are_the_visitors_own_history() -> None:
    assert parse_chat(LEGACY).earlier == (
        ("user", "Bonjour, la maison de Vergt est-elle encore à vendre ?"),
        ("assistant", "Bonjour ! Oui, elle l'est."))
    # the widget's own greeting first, blank turns left out, nothing after the question
    asked = parse_chat({"messages": [
        {"role": "assistant", "content": "Bienvenue ! Que cherchez-vous ?"},
        {"role": "user", "content": "Une maison"}, {"role": "assistant", "content": " "},
        {"role": "user", "content": "À Vergt"}, {"role": "assistant", "content": "…"}]})
    assert asked.earlier == (("assistant", "Bienvenue ! Que cherchez-vous ?"),
                             ("user", "Une maison"))
    assert asked.first_user == "Une maison" and asked.last_user == "À Vergt"
    assert parse_chat({"messages": [{"role": "user", "content": "Bonjour"}]}).earlier == ()


def test_text_postgresql_refuses_never_leaves_the_rules() -> None:
    """Half an emoji (a lone surrogate) or a NUL in a field: cleaned here, so it is
    neither a 5xx nor a contact lost."""
    assert clean_site_id("icidordogne\ud83c") == "icidordogne\ufffd"
    assert clean_site_id("ici\x00dordogne") == "ici dordogne"
    assert memo_text("#memo visites\x00 le samedi") == "visites le samedi"
    assert memo_text("#memo \x00\x00") == ""
    form = validate_contact({"name": "Jeanne\ud83d", "email": "j@example.fr",
                             "message": "Je voudrais\x00 visiter", "bien": "Longère \ud83c"})
    assert (form.name, form.bien) == ("Jeanne\ufffd", "Longère \ufffd")
    assert form.message == "Je voudrais  visiter"
    assert plain("a\x01b\udfffc\nd") == "a b\ufffdc\nd"
    with pytest.raises(Invalid):
        parse_chat({"messages": [{"role": "user", "content": "\x00\x00"}]})


def test_anthropic_style_blocks_and_a_missing_site_are_read() -> None:
    asked = parse_chat({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Bonjour"}, {"type": "text", "text": "encore"}]}]})
    assert asked.last_user == "Bonjour\nencore" and asked.site_id == "site"


@pytest.mark.parametrize("body", [
    {}, {"messages": []}, {"messages": "Bonjour"},
    {"messages": [{"role": "system", "content": "x"}]},
    {"messages": [{"role": "user", "content": 3}]},
    {"messages": [{"role": "assistant", "content": "Bonjour"}]},
    {"messages": [{"role": "user", "content": "   "}]},
    {"messages": [{"role": "user", "content": "a"}] * 201},
    {"messages": [{"role": "user", "content": "a"}], "site_id": 12},
])
def test_bad_chat_bodies_are_refused_in_french(body: dict) -> None:
    with pytest.raises(Invalid) as caught:
        parse_chat(body)
    assert caught.value.message[0].isupper() and caught.value.message.endswith((".", ")"))


def test_the_visitor_key_is_stable_per_site_ip_and_first_message() -> None:
    key = visitor_key("icidordogne", "203.0.113.9", "Bonjour")
    assert key.startswith("visiteur-") and len(key) == len("visiteur-") + 16
    assert key == visitor_key("icidordogne", "203.0.113.9", " Bonjour ")
    others = {visitor_key("autre", "203.0.113.9", "Bonjour"),
              visitor_key("icidordogne", "203.0.113.10", "Bonjour"),
              visitor_key("icidordogne", "203.0.113.9", "Bonsoir")}
    assert key not in others and len(others) == 3
    assert "203" not in key and "Bonjour" not in key


def test_memo_is_recognised_only_at_the_start() -> None:
    assert memo_text("#memo visites le samedi") == "visites le samedi"
    assert memo_text("  #MEMO :  visites\n le samedi ") == "visites le samedi"
    assert memo_text("#memo") == ""
    assert memo_text("Bonjour #memo visites") is None
    assert memo_text("#memorable") is None


def test_a_valid_contact_is_cleaned() -> None:
    form = validate_contact({"name": "  Jeanne   Martin ", "email": "jeanne@example.fr",
                             "phone": "06 12 34 56 78", "message": " Bonjour,\r\nJe veux visiter. ",
                             "bien": "Longère à Vergt (réf. 1234)"})
    assert form.name == "Jeanne Martin" and form.phone == "06 12 34 56 78"
    assert form.message == "Bonjour,\nJe veux visiter."
    assert validate_contact({"name": "A", "email": "a@b.fr", "message": "m"}).phone is None
    assert validate_contact({"name": "A", "email": "a@b.fr", "message": "m",
                             "phone": "", "bien": ""}).bien is None


def test_contact_errors_name_each_field_in_french() -> None:
    with pytest.raises(Invalid) as caught:
        validate_contact({"name": "", "email": "pas-une-adresse", "phone": "abc",
                          "message": "x" * 5001, "bien": 3})
    fields = caught.value.fields
    assert fields == {
        "name": "Indiquez votre nom.",
        "email": "Indiquez une adresse électronique valide (par exemple nom@exemple.fr).",
        "phone": "Ce numéro de téléphone ne semble pas valide.",
        "message": "Votre message est trop long (5000 caractères au plus).",
        "bien": "La référence du bien n'est pas valide.",
    }
    assert caught.value.message == "Indiquez votre nom."
    with pytest.raises(Invalid) as caught:
        validate_contact({"name": "N" * 201, "email": "a@b.fr", "message": "m"})
    assert caught.value.fields == {"name": "Votre nom est trop long (200 caractères au plus)."}
    with pytest.raises(Invalid) as caught:
        validate_contact({"name": "A", "email": "a@b.fr\nBcc: x@y.fr", "message": " "})
    assert set(caught.value.fields) == {"email", "message"}


def test_phones() -> None:
    assert plausible_phone("+33 6 12 34 56 78") and plausible_phone("05.53.00.00.00")
    assert not plausible_phone("12345") and not plausible_phone("06 12 34 ab 78")
    assert not plausible_phone("1" * 16)


def test_the_honeypot() -> None:
    assert not is_robot({"name": "A"})
    assert not is_robot({"website": ""}) and not is_robot({"hp": None})
    assert is_robot({"website": "http://spam.example"}) and is_robot({"hp": "1"})


def test_cors_is_an_exact_origin_match() -> None:
    allowed = ("https://www.icidordogne.fr",)
    assert cors_verdict(None, allowed) is None
    assert cors_verdict("https://www.icidordogne.fr", allowed) is True
    for other in ("https://evil.example", "https://www.icidordogne.fr.evil.example",
                  "http://www.icidordogne.fr", "null", "https://www.icidordogne.fr/"):
        assert cors_verdict(other, allowed) is False
    headers = preflight_headers("https://www.icidordogne.fr")
    assert headers["Access-Control-Allow-Origin"] == "https://www.icidordogne.fr"
    assert headers["Vary"] == "Origin" and "POST" in headers["Access-Control-Allow-Methods"]
    assert site_of_origin("https://www.icidordogne.fr") == "www.icidordogne.fr"
    assert site_of_origin(None) is None
