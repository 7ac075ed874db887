"""The earlier Axi's files read without a database (bot/legacy_text.py,
bot/legacy_formats.py, bot/legacy_conversations.py): encodings, every format, what is
kept raw and why, and the keys that make a second import a no-op."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from bot.legacy_conversations import parse_conversations
from bot.legacy_formats import (
    kind_by_content,
    kind_by_name,
    load_json,
    parse_consignes,
    parse_dpe_csv,
    parse_dpe_list,
    parse_json_memories,
    parse_site_notes,
)
from bot.legacy_text import (
    ConsigneItem,
    DpeItem,
    SouvenirItem,
    Unreadable,
    decode,
    parse_when,
    secret_in,
)

PARIS = ZoneInfo("Europe/Paris")
# the samples of ../shared/data/legacy/, verbatim
MEMORY_MD = ("# MEMORY - CONSIGNES AXIS\n\n## RÈGLES\n- Emails: toujours Anthony en copie\n"
             "- Validation: ne rien lancer sans accord Ludo\n"
             "- Qualité: être critique avant de passer à la suite\n\n## VEILLE DPE\n"
             "- Heure: 8h00\n- Destinataire: l'adresse de l'agence\n- Copie: Anthony\n")
SITE_MEMOS = ('{"icidordogne": "Horaires de l\'agence du Bugue : du mardi au samedi.\\nLes '
              'visites se font sur rendez-vous.", "vergt": "L\'agence de Vergt est fermée le '
              'lundi."}\n')
DPE_CSV = ("numero_dpe,date_reception,code_postal,commune,etiquette_dpe,trello_card_url,"
           "date_traitement\n2424E0000001A,2026-01-08,24260,Le Bugue,G,,2026-01-10 "
           "08:00:12.51342\n2424E0000004D,2026-01-09,24380,Vergt,F,https://trello.com/c/"
           "AbCdEf12,2026-01-10 08:00:13.10021\n")
DPE_JSON = '["2424E0000001A", "2424E0000002B", "2424E0000003C"]\n'


def paris(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
          second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=PARIS)


# ------------------------------------------------------------------ encodings
def test_utf8_with_a_bom_and_crlf() -> None:
    decoded = decode("\ufeff## RÈGLES\r\n- qualité\r\n".encode())
    assert decoded.encoding == "UTF-8 with a byte-order mark"
    assert decoded.text == "## RÈGLES\r\n- qualité\r\n"
    items = parse_consignes(decoded.text, "MEMORY.md").items
    assert [i.texte for i in items if isinstance(i, ConsigneItem)] == ["RÈGLES — qualité"]


def test_latin1_and_a_log_appended_in_two_encodings() -> None:
    assert decode("## RÈGLES\n- qualité\n".encode("latin-1")) == decode(
        "## RÈGLES\n- qualité\n".encode("cp1252"))
    latin = decode("Qualité — « oui »\n".encode("cp1252"))
    assert (latin.text, latin.encoding) == ("Qualité — « oui »\n", "Windows-1252 (Latin-1)")
    mixed = decode("[09:12] Ludo: déjà\n".encode() + "[09:13] Axi: réglé\n".encode("latin-1"))
    assert mixed.text == "[09:12] Ludo: déjà\n[09:13] Axi: réglé\n"
    assert mixed.encoding == "mixed UTF-8 and Windows-1252"
    assert mixed.notes == ("mixed encodings: 1 line(s) read as Windows-1252 (Latin-1), "
                           "the others as UTF-8",)


def test_nul_bytes_utf16_and_a_character_cut_in_half() -> None:
    nul = decode(b"2424E0000001A\x00\n")
    assert (nul.text, nul.notes) == ("2424E0000001A\n", ("1 NUL byte(s) removed",))
    assert decode("Vergt fermé\n".encode("utf-16")).text == "Vergt fermé\n"
    cut = decode("Vergt fermé".encode()[:-1])
    assert cut.text == "Vergt ferm" and "half-written" in cut.notes[0]


@pytest.mark.parametrize(("data", "reason"), [
    ("Bonjour Ludo\n".encode("utf-16-le"), "UTF-16 without a byte-order mark"),
    (b"ab\x81cd\n", "line 1: byte 0x81 is neither UTF-8 nor Windows-1252/Latin-1"),
    (bytes(range(1, 32)) * 20, "not a text file (520 control characters)"),
    (b"\xef\xbb\xbfok\n\xe9t\xe9 \x8f\n", "line 2: byte 0x8f is neither UTF-8 nor"),
    (b"\xff\xfe\x00\xd8", "starts with a UTF-16 byte-order mark but is not valid UTF-16"),
])
def test_strange_encodings_are_unreadable(data: bytes, reason: str) -> None:
    with pytest.raises(Unreadable, match=reason.replace("(", r"\(").replace(")", r"\)")):
        decode(data)


# ------------------------------------------------------------------ conversations
@pytest.mark.parametrize(("line", "speaker", "when", "text"), [
    ("[2025-03-14 09:12] Ludo: Bonjour", "Ludo", paris(2025, 3, 14, 9, 12), "Bonjour"),
    ("2025-03-14 09:12:05 - Axi: Noté.", "Axi", paris(2025, 3, 14, 9, 12, 5), "Noté."),
    ("14/03/2025 09:12 Ludo : Merci", "Ludo", paris(2025, 3, 14, 9, 12), "Merci"),
    ("14/03/2025, 09:12 - Julie Martin: vu", "Julie Martin", paris(2025, 3, 14, 9, 12), "vu"),
    ("[14/03/2025 9h12] Ludo: ok", "Ludo", paris(2025, 3, 14, 9, 12), "ok"),
    ("2025-03-14T08:12:00Z <Ludo> en UTC", "Ludo", paris(2025, 3, 14, 9, 12), "en UTC"),
    ("(2025-03-14 09:12:05+01:00) assistant: oui", "Axi", paris(2025, 3, 14, 9, 12, 5), "oui"),
    ("[2025-07-01 09:12] Ludo: été", "Ludo", paris(2025, 7, 1, 9, 12), "été"),
])
def test_conversation_line_formats(line: str, speaker: str, when: datetime, text: str) -> None:
    [item] = parse_conversations(line + "\n", "conversations.txt", PARIS).items
    assert isinstance(item, SouvenirItem) and item.type == "conversation"
    assert (item.speaker, item.timestamp, item.contenu) == (speaker, when, text)
    assert item.sens == ("sortant" if speaker == "Axi" else "entrant")
    assert item.timestamp is not None and item.timestamp.utcoffset() is not None


def test_continuations_day_lines_and_what_is_kept_raw() -> None:
    log = ("Export de l'ancien Axi\n"
           "=== 14/03/2025 ===\n"
           "[09:12] Ludo: Rappelle-moi la visite\n"
           "[09:12] Axi: Visite à Vergt à 10 h.\n"
           "Pense aux clés.\n"
           "\n"
           "[2025-13-45 09:20] Ludo: une date impossible\n"
           "une ligne orpheline\n"
           "[2025-03-14 09:30] Rappel sans locuteur\n"
           "[2025-03-14 09:31] Julie:\n"
           "[2025-03-15 10:0")
    parsed = parse_conversations(log, "c.txt", PARIS)
    got = [(i.where, i.type, i.speaker, i.contenu, i.unreadable, i.note)
           for i in parsed.items if isinstance(i, SouvenirItem)]
    assert got == [
        ("c.txt:1", "brut", None, "Export de l'ancien Axi",
         "not a message: no date and speaker recognised", None),
        ("c.txt:3", "conversation", "Ludo", "Rappelle-moi la visite", None, None),
        ("c.txt:4-5", "conversation", "Axi", "Visite à Vergt à 10 h.\nPense aux clés.",
         None, None),
        ("c.txt:7", "brut", None, "[2025-13-45 09:20] Ludo: une date impossible",
         "not a real date (2025-13-45)", None),
        ("c.txt:8", "brut", None, "une ligne orpheline",
         "not a message: no date and speaker recognised", None),
        ("c.txt:9", "conversation", None, "Rappel sans locuteur", None,
         "no speaker recognised"),
        ("c.txt:11", "brut", None, "[2025-03-15 10:0",
         "a date or time that cannot be read (a cut line?)", None),
    ]
    assert [(s.where, s.reason) for s in parsed.skips] == [
        ("c.txt:10", "a date and speaker with no message")]


def test_a_time_needs_a_day_and_a_french_date_may_be_month_first() -> None:
    [alone] = parse_conversations("[09:12] Ludo: quand ?\n", "c.txt", PARIS).items
    assert isinstance(alone, SouvenirItem) and alone.unreadable == "a time without a date before it"
    [us] = parse_conversations("03/14/2025 09:12 Ludo: ok\n", "c.txt", PARIS).items
    assert isinstance(us, SouvenirItem)
    assert (us.timestamp, us.note) == (paris(2025, 3, 14, 9, 12), "date read as month/day")


def test_one_turn_has_one_key_whatever_the_file() -> None:
    [log] = parse_conversations("[2025-03-14 09:12] Ludo: Bonjour  Axi\n", "a.txt", PARIS).items
    [same] = parse_conversations("14/03/2025 09:12 ludo : Bonjour Axi\n", "b.txt", PARIS).items
    [as_json] = parse_json_memories(json.dumps([{"speaker": "Ludo", "text": "Bonjour Axi",
                                                 "date": "2025-03-14T08:12:00Z"}]),
                                    "m.json", PARIS).items
    [later] = parse_conversations("[2025-03-14 09:13] Ludo: Bonjour Axi\n", "a.txt", PARIS).items
    assert log.key == same.key == as_json.key != later.key


# ------------------------------------------------------------------ MEMORY.md
def test_memory_md_items_are_consignes_with_their_section() -> None:
    parsed = parse_consignes(MEMORY_MD, "MEMORY.md")
    assert [(i.where, i.texte, i.source, i.audience) for i in parsed.items
            if isinstance(i, ConsigneItem)] == [
        ("MEMORY.md:4", "RÈGLES — Emails: toujours Anthony en copie", "ancien-axi:RÈGLES",
         "interne"),
        ("MEMORY.md:5", "RÈGLES — Validation: ne rien lancer sans accord Ludo",
         "ancien-axi:RÈGLES", "interne"),
        ("MEMORY.md:6", "RÈGLES — Qualité: être critique avant de passer à la suite",
         "ancien-axi:RÈGLES", "interne"),
        ("MEMORY.md:9", "VEILLE DPE — Heure: 8h00", "ancien-axi:VEILLE DPE", "interne"),
        ("MEMORY.md:10", "VEILLE DPE — Destinataire: l'adresse de l'agence",
         "ancien-axi:VEILLE DPE", "interne"),
        ("MEMORY.md:11", "VEILLE DPE — Copie: Anthony", "ancien-axi:VEILLE DPE", "interne"),
    ]
    assert [(s.where, s.reason) for s in parsed.skips] == [("MEMORY.md:1", "title, not a consigne")]


def test_memory_md_odd_lines() -> None:
    parsed = parse_consignes("Notes en vrac\n## A\n### B\n* un\n  qui continue\n1. deux\n"
                             "- [x] trois\n---\n## C\n- " + "x" * 4000 + "\n", "M.md")
    got = [(i.where, i.texte if isinstance(i, ConsigneItem) else
            i.unreadable if isinstance(i, SouvenirItem) else None) for i in parsed.items]
    assert got == [("M.md:1", "not a `- ` item of a section: not taken for a consigne"),
                   ("M.md:4-5", "A / B — un qui continue"), ("M.md:6", "A / B — deux"),
                   ("M.md:7", "A / B — trois"),
                   ("M.md:10", "too long for a consigne (4,004 characters, at most 4,000)")]
    assert [(s.where, s.reason) for s in parsed.skips] == [("M.md:8", "separator or comment")]


# ------------------------------------------------------------------ site notes, DPE
def test_site_memos_are_site_notes_for_everyone() -> None:
    items = parse_site_notes(SITE_MEMOS, "SITE_MEMOS.json").items
    assert [(i.where, i.texte, i.source, i.audience, i.what) for i in items
            if isinstance(i, ConsigneItem)] == [
        ("SITE_MEMOS.json › icidordogne (note 1)",
         "Horaires de l'agence du Bugue : du mardi au samedi.", "site:icidordogne", "tous",
         "site note"),
        ("SITE_MEMOS.json › icidordogne (note 2)", "Les visites se font sur rendez-vous.",
         "site:icidordogne", "tous", "site note"),
        ("SITE_MEMOS.json › vergt (note 1)", "L'agence de Vergt est fermée le lundi.",
         "site:vergt", "tous", "site note")]
    odd = parse_site_notes('{"x": 3, "y": ["- une", "deux"], "z": ""}', "s.json")
    assert [(i.where, i.what) for i in odd.items] == [
        ("s.json › x", "raw"), ("s.json › y (note 1)", "site note"),
        ("s.json › y (note 2)", "site note")]
    assert [(s.where, s.reason) for s in odd.skips] == [("s.json › z", "no notes for this site")]


def test_dpe_csv_export_and_its_broken_lines() -> None:
    [first, second] = parse_dpe_csv(DPE_CSV, "dpe_veille_vus.csv").items
    assert isinstance(first, DpeItem) and isinstance(second, DpeItem)
    assert (first.numero, first.source, dict(first.donnees)) == ("2424E0000001A", "24260", {
        "numero_dpe": "2424E0000001A", "ancien_axi": True, "date_reception": "2026-01-08",
        "code_postal": "24260", "commune": "Le Bugue", "classe": "G",
        "traite_le": "2026-01-10 08:00:12.51342"})
    assert second.donnees["trello"] == "https://trello.com/c/AbCdEf12"
    [extra] = parse_dpe_csv("numero_dpe,adresse,note\n2424E0000001A,3 rue Basse,\n",
                            "x.csv").items
    assert isinstance(extra, DpeItem)
    assert extra.donnees["autres_colonnes"] == {"adresse": "3 rue Basse"}
    broken = parse_dpe_csv(
        "numero_dpe;commune;etiquette_dpe\n2424e0000005e ;Sainte-Alvère;e\n;Vergt;F\n"
        '"2424E0000006F;"Vergt;F\nnumero_dpe;commune;etiquette_dpe\n2424E00\n'
        "2424E0000007G;Vergt", "vus.csv")
    got = [(i.where, i.numero if isinstance(i, DpeItem) else
            i.unreadable if isinstance(i, SouvenirItem) else None, i.note) for i in broken.items]
    assert got == [
        ("vus.csv:2", "2424E0000005E", None),
        ("vus.csv:3", "no DPE number", None),
        ("vus.csv:4", "not a CSV line (';' expected after '\"')", None),
        ("vus.csv:6", "not a DPE number ('2424E00'); 1 field where the header has 3", None),
        ("vus.csv:7", "2424E0000007G", "2 fields where the header has 3 (the last line is "
                                       "cut: a half-written file?)"),
    ]
    assert [(s.where, s.reason) for s in broken.skips] == [
        ("vus.csv:5", "the header again (files put together)")]
    with pytest.raises(Unreadable, match="no numero_dpe column"):
        parse_dpe_csv("numero;commune\n2424E0000001A;Vergt\n", "x.csv")


def test_dpe_json_list() -> None:
    assert [i.numero for i in parse_dpe_list(DPE_JSON, "dpe_vus.json").items
            if isinstance(i, DpeItem)] == ["2424E0000001A", "2424E0000002B", "2424E0000003C"]
    odd = parse_dpe_list('{"vus": ["2424E0000001A", {"numero_dpe": "2424E0000002B"}, 7]}',
                         "d.json").items
    assert [(i.where, i.what) for i in odd] == [
        ("d.json › vus[0]", "DPE seen"), ("d.json › vus[1]", "DPE seen"),
        ("d.json › vus[2]", "raw")]


# ------------------------------------------------------------------ JSON memories
def test_json_memory_shapes() -> None:
    doc = ["Ludo préfère le téléphone", {"fact": "Le mandat Dupont expire fin mars",
                                         "date": "2025-02-01", "source": "telegram"},
           {"role": "assistant", "content": "C'est noté.", "timestamp": 1741939920},
           {"foo": 1}, 3, ""]
    parsed = parse_json_memories(json.dumps(doc), "memoire.json", PARIS)
    got = [(i.where, i.what, i.contenu, i.timestamp, i.speaker, dict(i.extra))
           for i in parsed.items if isinstance(i, SouvenirItem)]
    assert got == [
        ("memoire.json[0]", "note", "Ludo préfère le téléphone", None, None, {}),
        ("memoire.json[1]", "note", "Le mandat Dupont expire fin mars", paris(2025, 2, 1),
         None, {"autres_champs": {"source": "telegram"}}),
        ("memoire.json[2]", "conversation", "C'est noté.",
         datetime(2025, 3, 14, 8, 12, tzinfo=UTC), "Axi", {}),
        ("memoire.json[3]", "raw", '{"foo": 1}', None, None, {}),
        ("memoire.json[4]", "raw", "3", None, None, {}),
    ]
    assert [(s.where, s.reason) for s in parsed.skips] == [("memoire.json[5]", "empty")]
    keyed = parse_json_memories(json.dumps({"ludo": "58 ans", "goûts": ["café", {
        "text": "aime le bergerac", "category": "vin"}], "agence": {"ville": "Le Bugue"},
        "bizarre": [[1]]}), "m.json", PARIS).items
    assert [(i.where, i.what, i.contenu, dict(i.extra)) for i in keyed
            if isinstance(i, SouvenirItem)] == [
        ("m.json › ludo", "note", "ludo : 58 ans", {}),
        ("m.json › goûts[0]", "note", "café", {"categorie": "goûts"}),
        ("m.json › goûts[1]", "note", "aime le bergerac", {"categorie": "goûts / vin"}),
        ("m.json › agence › ville", "note", "ville : Le Bugue", {"categorie": "agence"}),
        ("m.json › bizarre[0]", "raw", "[1]", {}),
    ]


@pytest.mark.parametrize(("text", "reason"), [
    ('["2424E0000001A", "2424E00', "it ends early (line 1, column 19): a half-written file?"),
    ('{"vergt": "fermé le lundi",', "it ends early"),
    ("", "it ends early"),
    ('{"a": 1,}', "Expecting property name enclosed in double quotes at line 1, column 9"),
])
def test_broken_json_is_unreadable(text: str, reason: str) -> None:
    with pytest.raises(Unreadable, match=reason.replace("(", r"\(").replace(")", r"\)")):
        load_json(text)


# ------------------------------------------------------------------ recognising files
def test_kinds_by_name_then_by_content() -> None:
    assert [kind_by_name(n) for n in ("MEMORY.md", "SITE_MEMOS.json", "dpe_vus.json",
                                      "dpe_veille_vus.csv", "conversations.txt",
                                      "memories.json", "README.md", "notes.bin")] == [
        "consignes", "site_notes", "dpe_list", "dpe_csv", "conversations", "json_memories",
        None, None]
    assert kind_by_content("export.json", DPE_JSON) == "dpe_list"
    assert kind_by_content("sites.json", SITE_MEMOS) == "site_notes"
    assert kind_by_content("autre.json", SITE_MEMOS) == "json_memories"
    assert kind_by_content("table.csv", DPE_CSV) == "dpe_csv"
    assert kind_by_content("regles.txt", MEMORY_MD) == "consignes"
    assert kind_by_content("log.txt", "[2025-03-14 09:12] Ludo: a\n"
                                      "[2025-03-14 09:13] Axi: b\n") == "conversations"
    assert kind_by_content("liste.txt", "des courses\net encore\n") is None
    with pytest.raises(Unreadable, match="ends early"):
        kind_by_content("x.json", '{"a": [1, 2')


def test_dates_of_json_fields() -> None:
    assert parse_when("2025-03-14", PARIS) == paris(2025, 3, 14)
    assert parse_when("14/03/2025 09h12", PARIS) == paris(2025, 3, 14, 9, 12)
    assert parse_when(1741939920000, PARIS) == datetime(2025, 3, 14, 8, 12, tzinfo=UTC)
    assert [parse_when(v, PARIS) for v in ("hier", "31/02/2025", True, None, -5)] == [None] * 5


def test_what_looks_like_a_secret() -> None:
    assert [secret_in(t) for t in (
        "Mot de passe OVH : Xk9!plm2Qa", "api_key=abcdef123456", "clé API: 8f7e6d5c4b3a",
        "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv",  # pragma: allowlist secret
        "123456789:AAHfiqksKZ8WmR2zSjiQ7_v4TMAKdiHm9T0",  # pragma: allowlist secret
        "Trello key 0123456789abcdef0123456789abcdef",  # pragma: allowlist secret
        "ghp_0123456789abcdefghijKLMNOP",  # pragma: allowlist secret
    )] == ["a password or key", "a password or key", "a password or key",
           "an Anthropic or OpenAI key", "a Telegram bot token", "a Trello key or token",
           "a GitHub or Slack token"]
    assert [secret_in(t) for t in (
        "Le mot de passe est sur le post-it", "2424E0000001A", "https://trello.com/c/AbCdEf12",
        "Validation: ne rien lancer sans accord Ludo", "token : ok",
    )] == [None] * 5
