"""`axi import legacy` as Anthony runs it: a real subprocess on the test database, on
realistic files of the earlier Axi (a BOM and CRLF, Latin-1 lines, a NUL byte, broken
and half-written lines, duplicates), run twice, renamed, and on files it must refuse."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from jobs import kinds
from memory.store import MemoryStore

MEMORY_MD = ("\ufeff# MEMORY - CONSIGNES AXIS\r\n\r\n## RÈGLES\r\n"
             "- Emails: toujours Anthony en copie\r\n"
             "- Validation: ne rien lancer sans accord Ludo\r\n"
             "- Qualité: être critique avant de passer à la suite\r\n"
             "Toujours vouvoyer les clients.\r\n\r\n## VEILLE DPE\r\n- Heure: 8h00\r\n"
             "- Destinataire: l'adresse de l'agence\r\n- Copie: Anthony\r\n- Copie: Anthony\r\n")
SITE_MEMOS = ('{"icidordogne": "Horaires de l\'agence du Bugue : du mardi au samedi.\\nLes '
              'visites se font sur rendez-vous.", "vergt": "L\'agence de Vergt est fermée le '
              'lundi."}\n')
DPE_CSV = ("numero_dpe,date_reception,code_postal,commune,etiquette_dpe,trello_card_url,"
           "date_traitement\n2424E0000001A,2026-01-08,24260,Le Bugue,G,,2026-01-10 "
           "08:00:12.51342\n2424E0000004D,2026-01-09,24380,Vergt,F,https://trello.com/c/"
           "AbCdEf12,2026-01-10 08:00:13.10021\n2424E0000005E,2026-01-09,24510,Sainte-Alvère,"
           "E,,2026-01-10 08:00:14\n2424E00,2026-01-1")
DPE_JSON = '["2424E0000001A", "2424E0000002B", "2424E0000003C"]\n'
LOG_UTF8 = ("Journal exporté de l'ancien Axi\r\n"
            "=== 14/03/2025 ===\r\n"
            "[09:12] Ludo: Rappelle-moi la visite de demain\r\n"
            "[09:12] Axi: Visite à Vergt à 10 h.\r\n"
            "Pense aux clés\x00 de la longère.\r\n")
LOG_LATIN1 = "[2025-03-14 09:15] Julie : Le client de Sainte-Alvère a rappelé.\r\n"
LOG_REST = ("14/03/2025 09:20 ludo@icidordogne.fr : Envoie-lui le DPE\r\n"
            "2025-03-14 09:21:05 - Marc: Je passe à l'agence cet après-midi\r\n"
            "[2025-13-45 09:30] Ludo: une date impossible\r\n"
            "[2025-03-14 09:12] Ludo: Rappelle-moi la visite de demain\r\n"
            "[2025-03-15 10:0")
MEMORIES = [
    "Ludo préfère qu'on l'appelle avant 9 h",
    {"fact": "Le mandat de la longère de Vergt expire fin mars", "date": "2025-02-01"},
    {"role": "user", "content": "Quel est le prix au m² à Vergt ?",
     "timestamp": "2025-03-10T18:00:00+01:00"},
    {"foo": 1},
]


def write_legacy(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "MEMORY.md").write_text(MEMORY_MD, encoding="utf-8", newline="")
    (folder / "SITE_MEMOS.json").write_text(SITE_MEMOS, encoding="utf-8")
    (folder / "dpe_veille_vus.csv").write_bytes(DPE_CSV.encode("cp1252"))
    (folder / "dpe_vus.json").write_text(DPE_JSON, encoding="utf-8")
    (folder / "conversations.txt").write_bytes(
        LOG_UTF8.encode() + LOG_LATIN1.encode("cp1252") + LOG_REST.encode())
    (folder / "memories.json").write_text(json.dumps(MEMORIES, ensure_ascii=False),
                                          encoding="utf-8")
    (folder / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))
    (folder / "vieux").mkdir()
    return folder


@pytest.fixture
async def axi(store: MemoryStore, cli_env: dict[str, str]) -> Any:
    await store.add_person("Ludo", relation="créateur", identities=[
        ("telegram", "1001"), ("email", "ludo@icidordogne.fr")])
    await store.add_person("Julie", relation="équipe")
    await store.add_veille("dpe", "dpe", "0 8 * * *", config={"codes_postaux": ["24260"]},
                           known_types=kinds.known_types())

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bot.cli", "import", "legacy", *args],
                              capture_output=True, text=True, timeout=120, env=cli_env,
                              cwd=Path(__file__).parent)

    return run


async def counts(store: MemoryStore) -> dict[str, int]:
    async with store.db.sessions() as session:
        return {table: int(await session.scalar(text(f"SELECT count(*) FROM {table}")) or 0)
                for table in ("souvenirs", "consignes", "elements_veille", "faits")}


def report_of(result: subprocess.CompletedProcess, code: int = 0) -> dict[str, Any]:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in {"dry_run", "written", "seconds"}}


async def test_dry_run_then_import_then_again_then_renamed(axi: Any, store: MemoryStore,
                                                           tmp_path: Path) -> None:
    folder = write_legacy(tmp_path / "ancien-axi")
    dry = report_of(axi(str(folder), "--dry-run", "--json"))
    assert (dry["dry_run"], dry["written"]) == (True, False)
    assert await counts(store) == {"souvenirs": 0, "consignes": 0, "elements_veille": 0,
                                   "faits": 0}
    async with store.db.sessions() as session:
        assert await session.scalar(text("SELECT count(*) FROM curseurs_canal")) == 0

    done = report_of(axi(str(folder), "--json"))
    assert (done["dry_run"], done["written"]) == (False, True)
    assert comparable(done) == comparable(dry)  # the dry run said exactly this
    assert done["counts"] == {"imported": 22, "skipped": 4, "unreadable": 6}
    assert done["imported"] == {"consigne": 6, "site note": 3, "DPE seen": 5,
                                "conversation": 6, "note": 2}
    files = {Path(f["path"]).name: (f["kind"], f["encoding"], f["status"], f["reason"])
             for f in done["files"]}
    assert files == {
        "MEMORY.md": ("consignes", "UTF-8 with a byte-order mark", "read", None),
        "SITE_MEMOS.json": ("site_notes", "UTF-8", "read", None),
        "conversations.txt": ("conversations", "mixed UTF-8 and Windows-1252", "read", None),
        "dpe_veille_vus.csv": ("dpe_csv", "Windows-1252 (Latin-1)", "read", None),
        "dpe_vus.json": ("dpe_list", "UTF-8", "read", None),
        "memories.json": ("json_memories", "UTF-8", "read", None),
        "photo.jpg": (None, None, "skipped", "not a file name the earlier Axi used (give "
                      "the file itself as PATH: its content is then recognised)"),
        "vieux": (None, None, "skipped", "a directory (not searched: give it as PATH to "
                  "import it)"),
    }
    left_out = {(i["where"], i["status"], i["reason"]) for i in done["items"]
                if i["status"] != "imported"}
    assert left_out == {
        ("MEMORY.md:1", "skipped", "title, not a consigne"),
        ("MEMORY.md:7", "unreadable", "not a `- ` item of a section: not taken for a "
                                      "consigne (kept as a raw souvenir)"),
        ("MEMORY.md:13", "skipped", "duplicate of MEMORY.md:12"),
        ("dpe_veille_vus.csv:5", "unreadable", "not a DPE number ('2424E00'); 2 fields where "
         "the header has 7 (the last line is cut: a half-written file?) (kept as a raw "
         "souvenir)"),
        ("dpe_vus.json[0]", "skipped", "duplicate of dpe_veille_vus.csv:2"),
        ("conversations.txt:1", "unreadable", "not a message: no date and speaker "
                                              "recognised (kept as a raw souvenir)"),
        ("conversations.txt:9", "unreadable", "not a real date (2025-13-45) (kept as a raw "
                                              "souvenir)"),
        ("conversations.txt:10", "skipped", "duplicate of conversations.txt:3"),
        ("conversations.txt:11", "unreadable", "a date or time that cannot be read (a cut "
                                               "line?) (kept as a raw souvenir)"),
        ("memories.json[3]", "unreadable", "no text field (text, content, fact…) (kept as "
                                           "a raw souvenir)"),
    }
    assert await counts(store) == {"souvenirs": 14, "consignes": 9, "elements_veille": 5,
                                   "faits": 0}  # no fact drawn from the text

    consignes = await store.list_consignes(active_only=False)
    assert [(c.texte, c.source, c.audience) for c in consignes][3:] == [
        ("VEILLE DPE — Heure: 8h00", "ancien-axi:VEILLE DPE", "interne"),
        ("VEILLE DPE — Destinataire: l'adresse de l'agence", "ancien-axi:VEILLE DPE",
         "interne"),
        ("VEILLE DPE — Copie: Anthony", "ancien-axi:VEILLE DPE", "interne"),
        ("Horaires de l'agence du Bugue : du mardi au samedi.", "site:icidordogne", "tous"),
        ("Les visites se font sur rendez-vous.", "site:icidordogne", "tous"),
        ("L'agence de Vergt est fermée le lundi.", "site:vergt", "tous")]
    assert [c.texte for c in await store.list_consignes(inner_circle=False)] == [
        c.texte for c in consignes[6:]]  # the site notes reach visitors, MEMORY.md's do not

    ludo, julie = (await store.get_person("Ludo")).id, (await store.get_person("Julie")).id
    async with store.db.sessions() as session:
        rows = (await session.execute(text(
            "SELECT timestamp, type, source, contenu, relation_id, metadata FROM souvenirs "
            "WHERE type = 'conversation' ORDER BY timestamp, id"))).all()
    turns = [(r.timestamp.astimezone(UTC), r.relation_id, r.metadata.get("auteur"),
              r.metadata.get("sens"), r.contenu) for r in rows]
    assert turns == [
        (datetime(2025, 3, 10, 17, 0, tzinfo=UTC), None, "user", "entrant",
         "Quel est le prix au m² à Vergt ?"),
        (datetime(2025, 3, 14, 8, 12, tzinfo=UTC), ludo, "Ludo", "entrant",
         "Rappelle-moi la visite de demain"),
        (datetime(2025, 3, 14, 8, 12, tzinfo=UTC), None, "Axi", "sortant",
         "Visite à Vergt à 10 h.\nPense aux clés de la longère."),
        (datetime(2025, 3, 14, 8, 15, tzinfo=UTC), julie, "Julie", "entrant",
         "Le client de Sainte-Alvère a rappelé."),
        (datetime(2025, 3, 14, 8, 20, tzinfo=UTC), ludo, "Ludo", "entrant",
         "Envoie-lui le DPE"),
        (datetime(2025, 3, 14, 8, 21, 5, tzinfo=UTC), None, "Marc", "entrant",
         "Je passe à l'agence cet après-midi"),
    ]
    assert all(r.source == "ancien-axi" and "extraction" not in r.metadata for r in rows)
    dpe = (await store.get_veille("dpe")).id
    assert await store.known_keys(dpe, ["2424E0000001A", "2424E0000002B", "2424E0000003C",
                                        "2424E0000004D", "2424E0000005E"]) == {
        "2424E0000001A", "2424E0000002B", "2424E0000003C", "2424E0000004D", "2424E0000005E"}
    assert await store.unreported_items(dpe) == []  # never reported again

    again = report_of(axi(str(folder), "--json"))
    assert again["counts"] == {"imported": 0, "skipped": 32, "unreadable": 0}
    assert {i["reason"] for i in again["items"]} == {
        "title, not a consigne", "already imported", "already seen by veille dpe",
        "duplicate of MEMORY.md:12", "duplicate of dpe_veille_vus.csv:2",
        "duplicate of conversations.txt:3"} | {
        f"already a consigne (#{c.id})" for c in consignes}
    assert await counts(store) == {"souvenirs": 14, "consignes": 9, "elements_veille": 5,
                                   "faits": 0}

    renamed = tmp_path / "copie"
    renamed.mkdir()
    for old, new in (("MEMORY.md", "regles.md"), ("SITE_MEMOS.json", "sites.json"),
                     ("dpe_vus.json", "vus.json"), ("dpe_veille_vus.csv", "export.csv"),
                     ("conversations.txt", "journal.txt"), ("memories.json", "export-2.json")):
        shutil.copy(folder / old, renamed / new)
    moved = report_of(axi(*sorted(str(p) for p in renamed.iterdir()), "--json"))
    assert sorted(f["kind"] for f in moved["files"]) == sorted(
        ["consignes", "site_notes", "dpe_list", "dpe_csv", "conversations", "json_memories"])
    assert moved["counts"]["imported"] == 0 and moved["counts"]["unreadable"] == 0
    assert await counts(store) == {"souvenirs": 14, "consignes": 9, "elements_veille": 5,
                                   "faits": 0}

    # what Ludo had forgotten or Anthony removed since is not brought back
    marc = next(r for r in rows if r.metadata.get("auteur") == "Marc")
    async with store.db.sessions() as session:
        marc_id = await session.scalar(text(
            "SELECT id FROM souvenirs WHERE metadata->>'auteur' = 'Marc'"))
    await store.forget_souvenir(marc_id)
    await store.remove_consigne(consignes[0].id)
    after = report_of(axi(str(folder), "--json"))
    assert after["counts"]["imported"] == 0
    reasons = {i["where"]: i["reason"] for i in after["items"]}
    assert reasons["MEMORY.md:4"] == "imported before and removed since: not brought back"
    assert reasons["conversations.txt:8"] == "already imported"
    assert marc.contenu == "Je passe à l'agence cet après-midi"
    assert await counts(store) == {"souvenirs": 13, "consignes": 8, "elements_veille": 5,
                                   "faits": 0}


async def test_the_report_a_person_reads(axi: Any, store: MemoryStore, tmp_path: Path) -> None:
    folder = write_legacy(tmp_path / "ancien-axi")
    result = axi(str(folder / "dpe_veille_vus.csv"), str(folder / "dpe_vus.json"),
                 str(folder / "MEMORY.md"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # the progress bar leaves nothing behind
    lines = result.stdout.splitlines()
    assert ("11 imported (6 consigne, 5 DPE seen), 3 skipped, 2 unreadable (kept as raw "
            "souvenirs), in") in result.stdout
    assert lines[lines.index("Skipped:") + 1:lines.index("Skipped:") + 4] == [
        "  MEMORY.md:1: title, not a consigne — « MEMORY - CONSIGNES AXIS »",
        "  MEMORY.md:13: duplicate of MEMORY.md:12 — « VEILLE DPE — Copie: Anthony »",
        "  dpe_vus.json[0]: duplicate of dpe_veille_vus.csv:2 — « 2424E0000001A »"]
    unreadable = lines.index("Unreadable (kept as raw souvenirs, type 'brut'):")
    assert lines[unreadable + 1:unreadable + 3] == [
        "  MEMORY.md:7: not a `- ` item of a section: not taken for a consigne (kept as a raw "
        "souvenir) — « Toujours vouvoyer les clients. »",
        "  dpe_veille_vus.csv:5: not a DPE number ('2424E00'); 2 fields where the header has "
        "7 (the last line is cut: a half-written file?) (kept as a raw souvenir) — "
        "« 2424E00,2026-01-1 »"]
    again = axi(str(folder / "dpe_vus.json"), "--dry-run")
    assert again.stdout.splitlines()[0] == ("Dry run: nothing was written ('imported' means: "
                                            "would be imported).")
    assert "0 imported, 3 skipped, 0 unreadable" in again.stdout


async def test_bad_files_write_nothing_and_say_why(axi: Any, store: MemoryStore,
                                                   tmp_path: Path) -> None:
    folder = write_legacy(tmp_path / "ancien-axi")
    report_of(axi(str(folder / "MEMORY.md"), "--json"))
    before = await counts(store)
    consignes = await store.list_consignes(active_only=False)
    (folder / "MEMORY.md").write_text(MEMORY_MD + "- Nouvelle: à ne pas importer\n",
                                      encoding="utf-8")
    (folder / "dpe_vus.json").write_text('["2424E0000001A", "2424E00', encoding="utf-8")
    (folder / "conversations.txt").write_bytes(
        "[2025-03-14 09:12] Ludo: Bonjour\n".encode("utf-16-le"))
    result = axi(str(folder), "--json")
    report = report_of(result, code=1)
    assert report["written"] is False
    assert result.stderr.splitlines() == [
        f"Error: {folder / 'conversations.txt'}: not a text file in UTF-8 or Latin-1 (33 NUL "
        "bytes in 66): binary, or UTF-16 without a byte-order mark; convert it to UTF-8 first "
        "(e.g. iconv -f UTF-16 -t UTF-8)",
        f"Error: {folder / 'dpe_vus.json'}: not valid JSON: it ends early (line 1, column 19): "
        "a half-written file?"]
    assert any(i["where"] == "MEMORY.md:14" and i["status"] == "imported"
               for i in report["items"])  # what it would have imported
    assert await counts(store) == before  # nothing half-done
    assert await store.list_consignes(active_only=False) == consignes  # nothing overwritten
    human = axi(str(folder / "dpe_vus.json"), str(tmp_path / "absent.txt"))
    assert human.returncode == 1 and "Traceback" not in human.stderr
    assert human.stdout.startswith("Nothing was written: 2 file(s) unreadable; fix them or "
                                   "leave them out, then run again.")
    assert human.stderr.splitlines()[1] == (
        f"Error: {tmp_path / 'absent.txt'}: no such file or directory")


async def test_one_import_at_a_time(axi: Any, store: MemoryStore, tmp_path: Path) -> None:
    folder = write_legacy(tmp_path / "ancien-axi")
    async with store.advisory_lock("import:legacy") as held:
        assert held
        busy = axi(str(folder))
        dry = axi(str(folder), "--dry-run", "--json")  # reads only: not held back
    assert busy.returncode == 4 and "Traceback" not in busy.stderr
    assert busy.stderr.strip() == ("Error: another `axi import legacy` is running now; try "
                                   "again when it is done")
    assert dry.returncode == 0 and await counts(store) == {
        "souvenirs": 0, "consignes": 0, "elements_veille": 0, "faits": 0}
    assert busy.stdout == ""


async def test_secrets_are_neither_imported_nor_shown(axi: Any, store: MemoryStore,
                                                      tmp_path: Path) -> None:
    notes = tmp_path / "acces.md"  # another name: recognised by its content
    notes.write_text("## ACCÈS\n- Mot de passe OVH : Xk9!plm2Qa\n- Appeler Ludo le matin\n",
                     encoding="utf-8")
    log = tmp_path / "conversations.txt"
    token = "123456789:AAHfiqksKZ8WmR2zSjiQ7_v4TMAKdiHm9T0"  # pragma: allowlist secret
    log.write_text(f"[2025-03-14 09:12] Ludo: le bot c'est {token}\n"
                   "[2025-03-14 09:13] Axi: Noté.\n", encoding="utf-8")
    result = axi(str(notes), str(log))
    assert result.returncode == 0, result.stderr
    assert "Xk9!plm2Qa" not in result.stdout and "AAHfiqks" not in result.stdout
    assert ("  acces.md:2: looks like a password or key: not imported (secrets belong in .env; "
            "change it if it was ever shared)") in result.stdout.splitlines()
    assert ("  conversations.txt:1: looks like a Telegram bot token: not imported (secrets "
            "belong in .env; change it if it was ever shared)") in result.stdout.splitlines()
    assert [c.texte for c in await store.list_consignes()] == ["ACCÈS — Appeler Ludo le matin"]
    async with store.db.sessions() as session:
        assert list(await session.scalars(text("SELECT contenu FROM souvenirs"))) == ["Noté."]


def write_odd_name(folder: Path) -> None:
    folder.mkdir()
    odd = os.fsdecode(bytes(folder) + b"/souvenirs-\xe9t\xe9.json")  # from a Latin-1 disk
    Path(odd).write_text('["Vergt : visite du 12"]', encoding="utf-8")


async def test_a_file_name_that_is_not_utf8(axi: Any, store: MemoryStore,
                                            tmp_path: Path) -> None:
    folder = tmp_path / "ancien-axi"
    write_odd_name(folder)
    report = report_of(axi(str(folder), "--json"))
    assert [f["path"] for f in report["files"]] == [f"{folder}/souvenirs-\\xe9t\\xe9.json"]
    assert [(i["where"], i["status"]) for i in report["items"]] == [
        ("souvenirs-\\xe9t\\xe9.json[0]", "imported")]
    human = axi(str(folder))
    assert human.returncode == 0 and "souvenirs-\\xe9t\\xe9.json" in human.stdout


async def test_a_path_the_system_refuses_is_said_not_a_traceback(
        axi: Any, store: MemoryStore, tmp_path: Path) -> None:
    """A name longer than the system allows (ENAMETOOLONG) stopped with an OSError
    traceback from Path.is_dir()."""
    folder = write_legacy(tmp_path / "ancien-axi")
    too_long = str(tmp_path / ("é" * 300))
    before = await counts(store)
    result = axi(str(folder / "MEMORY.md"), too_long)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1] == f"Error: {too_long}: cannot read it: File name too long"
    assert await counts(store) == before  # nothing half-done
