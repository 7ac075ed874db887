"""The address guard: does a French reply say "tu" or "vous" to its reader, and fix it.

Why: the local 7B model often drifts from the tutoiement Ludo expects (or tutoies a
client). The guard runs on every reply before it is sent. It is deliberately simple and
deterministic: rules for the forms an assistant's reply actually uses, and an honest
``needs_llm_rewrite`` flag when the rules are not sure, so the caller can ask the model to
rewrite instead. Pure: no I/O.

Detection rules (what counts as addressing the reader):
- tu: the words tu, te, t', toi, ton, ta, tes, le tien/la tienne/les tien(ne)s, inverted
  verbs (peux-tu), imperatives followed by a pronoun (dis-moi, envoie-le) and a short list
  of imperatives at the start of a sentence (Regarde…, N'hésite pas…). "ton" after an
  article ("le ton", "un ton") is the noun; "tu" after a spaced auxiliary ("s'est tu") is
  the participle of se taire; words containing "tu" (tutoyer, toit) never count.
- vous: vous, votre, vos, le/la/les vôtre(s), and imperatives in -ez at the start of a
  sentence or followed by a pronoun (N'hésitez pas, Contactez-nous). "rendez-vous" is a
  noun and never counts.
- Not the reader: text between quotes (« », “ ”, "…"), code, quoted email lines (">")
  and letter drafts for a third party (from a "Madame," / "Bonjour Monsieur" line to the
  closing "Cordialement"); they are ignored and never rewritten.
- Plural "vous" (addressing several people: "vous deux", "tous les deux", "ensemble"…)
  is ambiguous: when the reader is tutoyé and such a cue appears, the guard does not
  rewrite and asks for an LLM rewrite instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from bot.tutoiement_verbs import Mood, pl_to_sg, sg_to_pl

Form = Literal["tu", "vous"]

TU_RELATIONS = frozenset({"créateur", "administrateur", "équipe", "axis"})
"""Tutoyés by default: the inner circle (bot/policy.py, who sees what) and Axis."""


def form_for(relation: str | None, comment_interagir: str | None = None) -> Form:
    """tu for the inner circle (and Axis), vous for clients, prospects and strangers;
    an explicit "vouvoie"/"tutoie" in comment_interagir wins."""
    style = (comment_interagir or "").lower()
    if "vouvoi" in style or "vouvoy" in style:
        return "vous"
    if "tutoi" in style or "tutoy" in style:
        return "tu"
    return "tu" if relation in TU_RELATIONS else "vous"


# --- tokens and protected regions ------------------------------------------------------

_TOKEN = re.compile(r"[^\W\d_]+(?:['’](?=[^\W\d_]))?")
_PROTECT = [
    re.compile(r"«[^»]*»"), re.compile(r"“[^”]*”"), re.compile(r'"[^"\n]*"'),
    re.compile(r"```.*?```", re.S), re.compile(r"`[^`\n]*`"), re.compile(r"^[ \t]*>.*$", re.M),
    re.compile(
        r"^[ \t]*(?:Objet\s*:|(?:(?:Bonjour|Bonsoir|Cher|Chère|Chers)\s+)?"
        r"(?:Madame|Monsieur|Mesdames|Messieurs|Mme|M\.)\b).*?"
        r"(?:^[ \t]*(?:Bien cordialement|Cordialement|Bien à vous|Sincères salutations|"
        r"Veuillez agréer)[^\n]*$|\Z)", re.M | re.S),
]
_PLURAL = re.compile(r"\b(?:vous deux|vous trois|vous tous|vous toutes|tous les (?:deux|trois)|"
                     r"toutes les (?:deux|trois)|chacun d'entre vous|l'un de vous|ensemble)\b", re.I)
_SENTENCE_BREAK = re.compile(r"[.!?:;\n]")
_LEAD = " \t*-•>\"«“(0123456789)."

CLITICS = frozenset({"moi", "toi", "nous", "vous", "le", "la", "les", "lui", "leur", "en", "y"})
_CHAIN = frozenset({"ne", "n'", "me", "m'", "te", "t'", "le", "la", "l'", "les", "lui", "leur",
                    "y", "en", "nous", "vous", "se", "s'"})
_SUBJECTS = frozenset({"je", "j'", "il", "elle", "on", "nous", "ils", "elles", "cela", "ça",
                       "ceci", "qui", "ce"})
_PREPS = frozenset({"pour", "à", "de", "d'", "avec", "chez", "sans", "par", "sur", "contre",
                    "envers", "entre", "vers", "après", "avant", "selon", "comme", "et", "ou",
                    "que", "qu'", "moins", "plus", "sauf"})
_AUX = frozenset({"est", "ai", "a", "avait", "avons", "ont", "suis", "sommes"})  # "s'est tu"
_TON_NOUN = frozenset({"le", "un", "du", "au", "ce", "même", "bon", "mauvais", "autre", "quel"})
_NOT_IMPERATIVE_EZ = frozenset({"chez", "nez", "assez", "rez", "rendez"})
TU_IMPERATIVES = frozenset({
    "dis", "fais", "tiens", "sois", "aie", "sache", "va", "viens", "prends", "mets", "écris",
    "réponds", "attends", "préviens", "envoie", "appelle", "rappelle", "regarde", "vérifie",
    "hésite", "essaie", "choisis", "excuse", "contacte", "confirme", "relis", "transmets",
})
_FEM_SUFFIXES = ("tion", "sion", "ure", "ette", "ence", "ance", "ité", "ée", "ie", "elle",
                 "esse", "ière", "euse", "ude", "ade", "ise", "enne")
FEMININE = frozenset("""maison agence demande annonce visite offre date réponse liste part fille
femme mère sœur voiture boîte semaine clé question main propriété grange piscine cuisine chambre
surface parcelle commune taxe vente recherche copie pièce photo estimation carte fiche note lettre
remarque prochaine nouvelle belle première dernière bonne grande petite ancienne famille banque
cave terrasse porte façade route rue ville région zone campagne résidence équipe aide venue
rencontre décision attente patience confiance signature facture adresse""".split())
MASCULINE = frozenset("""bien projet dossier mandat compromis message mail courriel appartement
terrain prix bureau numéro avis budget crédit notaire acheteur vendeur client retour accord
jardin garage bail loyer contrat diagnostic dpe temps choix compte téléphone nom fils mari frère
père nouveau prochain bon beau premier dernier travail courrier document lien site agenda
planning devis chantier permis cadastre secteur quartier village logement chèque virement
paiement acompte silence stade ancien grand petit côté cas avenir intérêt rdv""".split())


@dataclass(frozen=True)
class _Tok:
    start: int
    end: int
    text: str

    @property
    def low(self) -> str:
        return self.text.lower().replace("’", "'")


def _protected(text: str) -> list[tuple[int, int]]:
    spans = [(m.start(), m.end()) for rx in _PROTECT for m in rx.finditer(text)]
    return sorted(spans)


def _tokens(text: str) -> list[_Tok]:
    spans = _protected(text)
    out = []
    for m in _TOKEN.finditer(text):
        if not any(a <= m.start() < b for a, b in spans):
            out.append(_Tok(m.start(), m.end(), m.group()))
    return out


class _View:
    """Neighbourhood queries over the unprotected tokens of one text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)

    def low(self, i: int) -> str:
        return self.toks[i].low if 0 <= i < len(self.toks) else ""

    def sep(self, i: int) -> str:
        """What lies between token i-1 and token i."""
        if i <= 0:
            return self.text[: self.toks[0].start] if self.toks else ""
        return self.text[self.toks[i - 1].end: self.toks[i].start]

    def hyphen_before(self, i: int) -> bool:
        return i > 0 and self.sep(i) == "-"

    def hyphen_clitic_after(self, i: int) -> bool:
        return i + 1 < len(self.toks) and self.sep(i + 1) == "-" and self.low(i + 1) in CLITICS

    def sentence_start(self, i: int) -> bool:
        if i == 0:
            return self.sep(0).strip(_LEAD) == "" or bool(_SENTENCE_BREAK.search(self.sep(0)))
        return bool(_SENTENCE_BREAK.search(self.sep(i))) or "\n" in self.sep(i)

    def imperative_start(self, i: int) -> bool:
        """Sentence-initial, possibly after a negation: "Regardez", "N'hésitez"."""
        if self.low(i - 1) in ("n'", "ne") and self.sentence_start(i - 1):
            return True
        return self.sentence_start(i) and not (i > 0 and self.low(i - 1) in ("n'", "ne"))

    def verb_after(self, i: int) -> int:
        """Index of the first word after token i that is not a clitic pronoun (or -1)."""
        j = i + 1
        while j < len(self.toks) and self.low(j) in _CHAIN and self.sep(j).strip() == "":
            j += 1
        return j if j < len(self.toks) and self.sep(j).strip() in ("", "-") else -1


def _is_vous_verb(word: str) -> bool:
    return (word.endswith("ez") or word in ("êtes", "faites", "dites")) and word not in _NOT_IMPERATIVE_EZ


# --- detection -------------------------------------------------------------------------

@dataclass(frozen=True)
class AddressAnalysis:
    tu: int
    vous: int
    plural_cue: bool  # a "vous" may address several people
    skipped_quotes: bool  # some text was ignored (quotes, drafts, code)

    @property
    def form(self) -> Literal["tu", "vous", "mixed", "none"]:
        if self.tu and self.vous:
            return "mixed"
        return "tu" if self.tu else "vous" if self.vous else "none"


def _tu_marker(v: _View, i: int) -> bool:
    w = v.low(i)
    if w == "tu":
        return v.hyphen_before(i) or not (v.low(i - 1) in _AUX and v.sep(i).strip() == "")
    if w in ("te", "t'", "toi", "ta", "tes"):
        return True
    if w == "ton":
        return v.low(i - 1) not in _TON_NOUN
    if w in ("tien", "tienne", "tiens", "tiennes") and v.low(i - 1) in ("le", "la", "les"):
        return True
    if w.endswith("ez") or w in ("moi", "nous", "vous", "faites", "dites"):
        return False
    if v.hyphen_clitic_after(i) and v.low(i + 1) != "vous" and not v.hyphen_before(i):
        return w.isalpha() and w not in CLITICS and w not in ("peut", "est", "celui", "celle")
    return w in TU_IMPERATIVES and v.imperative_start(i) and v.sep(i + 1) != " :"


def _vous_marker(v: _View, i: int) -> bool:
    w = v.low(i)
    if w == "vous":
        return not (v.hyphen_before(i) and v.low(i - 1) == "rendez")
    if w in ("votre", "vos", "vôtre", "vôtres"):
        return True
    if _is_vous_verb(w) and not v.hyphen_before(i):
        if v.hyphen_clitic_after(i):
            return v.low(i + 1) != "vous"  # "pouvez-vous": the vous itself is counted
        if v.imperative_start(i):
            return True
        # mid-sentence: an -ez verb whose subject is not "vous" is an imperative
        # ("S'il vous plaît, vérifiez…"); capitalised words (Rodez) are names
        return not v.toks[i].text[:1].isupper() and not _after_vous(v, i)
    return False


def _after_vous(v: _View, i: int) -> bool:
    """Is word i the verb of a "vous" subject (vous …clitics… verb)?"""
    j = i - 1
    while j >= 0 and v.low(j) in _CHAIN and v.sep(j + 1).strip() == "":
        if v.low(j) == "vous":
            return True
        j -= 1
    return False


def detect_address(text: str) -> AddressAnalysis:
    """Count the ways `text` addresses its reader (see the module docstring)."""
    v = _View(text)
    tu = sum(_tu_marker(v, i) for i in range(len(v.toks)))
    vous = sum(_vous_marker(v, i) for i in range(len(v.toks)))
    clean = text
    for a, b in reversed(_protected(text)):
        clean = clean[:a] + " " * (b - a) + clean[b:]
    return AddressAnalysis(tu=tu, vous=vous, plural_cue=bool(_PLURAL.search(clean)),
                           skipped_quotes=bool(_protected(text)))


# --- rewriting -------------------------------------------------------------------------

@dataclass(frozen=True)
class Rewrite:
    text: str
    changed: bool
    confident: bool  # False: some form was guessed (gender, unknown verb): ask the LLM
    notes: tuple[str, ...] = ()


class _Editor:
    def __init__(self, view: _View) -> None:
        self.v = view
        self.edits: dict[int, tuple[int, int, str]] = {}  # token index -> (start, end, text)
        self.notes: list[str] = []
        self.apostrophe = "’" if "’" in view.text else "'"

    def set(self, i: int, new: str, *, end: int | None = None) -> None:
        tok = self.v.toks[i]
        if tok.text[:1].isupper():
            new = new[:1].upper() + new[1:]
        self.edits[i] = (tok.start, tok.end if end is None else end, new)

    def verb(self, j: int, new: str | None, what: str) -> None:
        if j < 0 or j in self.edits:
            return
        if new is None:
            self.notes.append(f"verbe inconnu : {self.v.toks[j].text} ({what})")
        else:
            self.set(j, new)

    def result(self, confident: bool = True) -> Rewrite:
        text = self.v.text
        for start, end, new in sorted(self.edits.values(), reverse=True):
            text = text[:start] + new + text[end:]
        return Rewrite(text=text, changed=text != self.v.text,
                       confident=confident and not self.notes, notes=tuple(self.notes))


def _starts_vowel(word: str) -> bool:
    return word[:1].lower() in "aeiouyhàâäéèêëîïôöûùœ"


def _feminine(word: str) -> bool | None:
    w = word.lower()
    if w in MASCULINE:
        return False
    if w in FEMININE or w.endswith(_FEM_SUFFIXES):
        return True
    return None


def to_tu(text: str) -> Rewrite:
    """Rewrite the common vous forms addressed to the reader into tu forms."""
    v = _View(text)
    ed = _Editor(v)
    n = len(v.toks)
    for i in range(n):
        w = v.low(i)
        if i in ed.edits:
            continue
        if w == "vous":
            if v.hyphen_before(i):
                prev = v.low(i - 1)
                if prev == "rendez":
                    continue
                rest_of_line = text[v.toks[i].end:].split("\n")[0][:80]
                if "?" in rest_of_line or prev in _QUESTION_VERBS:  # pouvez-vous -> peux-tu
                    ed.verb(i - 1, pl_to_sg(prev), "inversion")
                    ed.set(i, "tu")
                else:  # renseignez-vous -> renseigne-toi
                    ed.verb(i - 1, pl_to_sg(prev, mood="imp"), "impératif")
                    ed.set(i, "toi")
                continue
            if v.sep(i + 1) == "-" and v.low(i + 1).startswith("même"):
                ed.set(i, "toi")
                if v.low(i + 1) == "mêmes":
                    ed.notes.append("vous-mêmes est pluriel")
                continue
            prev, nxt = v.low(i - 1), v.low(i + 1)
            j = v.verb_after(i)
            verb = v.low(j) if j >= 0 else ""
            if _is_vous_verb(verb) and prev not in _SUBJECTS and \
                    not (prev in ("ne", "n'") and v.low(i - 2) in _SUBJECTS):
                ed.set(i, "tu")
                for k in range(i + 1, j):  # reflexive "vous vous" -> "tu te"
                    if v.low(k) == "vous":
                        _object_te(ed, v, k)
                mood: Mood = "subj" if prev in ("que", "qu'") else "ind"
                ed.verb(j, pl_to_sg(verb, mood=mood), "présent")
            elif prev in _PREPS and not (prev in ("pour", "de", "d'", "à", "sans")
                                         and re.search(r"(er|ir|re|oir)$", nxt)):
                ed.set(i, "toi")  # disjunctive: avec toi, chez toi, et toi ?
            else:
                _object_te(ed, v, i)  # je t'envoie, pour t'aider, s'il te plaît
        elif w in ("votre", "vos"):
            if w == "vos":
                ed.set(i, "tes")
                continue
            noun = v.toks[i + 1].text if i + 1 < n else ""
            fem = False if _starts_vowel(noun) else _feminine(noun)
            if fem is None:
                ed.notes.append(f"genre inconnu : {noun}")
            ed.set(i, "ta" if fem else "ton")
        elif w in ("vôtre", "vôtres"):
            article = v.low(i - 1)
            ed.set(i, {"la": "tienne", "les": "tiens"}.get(article, "tien"))
            if article == "les":
                ed.notes.append("les vôtres : genre deviné")
        elif _vous_marker(v, i) and w != "vous":
            ed.verb(i, pl_to_sg(w, mood="imp"), "impératif")
    return ed.result()


def _object_te(ed: _Editor, v: _View, i: int) -> None:
    nxt = v.toks[i + 1] if i + 1 < len(v.toks) else None
    if nxt is not None and v.sep(i + 1).strip() == "" and v.sep(i + 1) and _starts_vowel(nxt.text):
        ed.set(i, "t" + ed.apostrophe, end=nxt.start)
    else:
        ed.set(i, "te")


_QUESTION_VERBS = frozenset({"pouvez", "voulez", "avez", "êtes", "savez", "souhaitez", "pourriez",
                             "voudriez", "auriez", "seriez", "connaissez", "pensez", "croyez",
                             "préférez", "aimeriez", "désirez", "comptez", "devez", "allez"})


def to_vous(text: str) -> Rewrite:
    """Rewrite the common tu forms addressed to the reader into vous forms."""
    v = _View(text)
    ed = _Editor(v)
    n = len(v.toks)
    for i in range(n):
        w = v.low(i)
        if i in ed.edits or not _tu_marker(v, i):
            continue
        if w == "tu":
            ed.set(i, "vous")
            if v.hyphen_before(i):
                ed.verb(i - 1, sg_to_pl(v.low(i - 1)), "inversion")
                continue
            j = v.verb_after(i)
            for k in range(i + 1, j if j >= 0 else i + 1):
                if v.low(k) in ("te", "t'"):
                    _object_vous(ed, v, k)
            mood: Mood = "subj" if v.low(i - 1) in ("que", "qu'") else "ind"
            ed.verb(j, sg_to_pl(v.low(j), mood=mood) if j >= 0 else None, "présent")
        elif w in ("te", "t'"):
            _object_vous(ed, v, i)
        elif w == "toi":
            ed.set(i, "vous")
        elif w in ("ton", "ta"):
            ed.set(i, "votre")
        elif w == "tes":
            ed.set(i, "vos")
        elif w in ("tien", "tienne", "tiens", "tiennes") and v.low(i - 1) in ("le", "la", "les"):
            ed.set(i, "vôtres" if w.endswith("s") else "vôtre")
        else:  # an imperative
            ed.verb(i, sg_to_pl(w, mood="imp"), "impératif")
    return ed.result()


def _object_vous(ed: _Editor, v: _View, i: int) -> None:
    ed.set(i, "vous " if v.low(i) == "t'" else "vous")


# --- the guard -------------------------------------------------------------------------

@dataclass(frozen=True)
class GuardResult:
    text: str  # the reply to send: corrected when the rules could
    expected: Form
    found: Literal["tu", "vous", "mixed", "none"]
    changed: bool
    needs_llm_rewrite: bool  # the rules were not sure: ask the model to rewrite `text`
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.needs_llm_rewrite


def _wrong(analysis: AddressAnalysis, expected: Form) -> int:
    return analysis.vous if expected == "tu" else analysis.tu


def rewrite_needed(text: str, relation: str | None, comment_interagir: str | None = None) -> bool:
    """Does this reply use the wrong form for someone of this relation?"""
    return _wrong(detect_address(text), form_for(relation, comment_interagir)) > 0


def guard_reply(text: str, expected: Form) -> GuardResult:
    """Check a reply against the expected form and fix what the rules can."""
    analysis = detect_address(text)
    if _wrong(analysis, expected) == 0:
        return GuardResult(text, expected, analysis.form, False, False)
    if expected == "tu" and analysis.plural_cue:
        return GuardResult(text, expected, analysis.form, False, True,
                           ("« vous » peut-être pluriel",))
    rewrite = to_tu(text) if expected == "tu" else to_vous(text)
    left = _wrong(detect_address(rewrite.text), expected)
    notes = rewrite.notes + ((f"{left} forme(s) non corrigée(s)",) if left else ())
    return GuardResult(rewrite.text, expected, analysis.form, rewrite.changed,
                       needs_llm_rewrite=bool(left) or not rewrite.confident, notes=notes)
