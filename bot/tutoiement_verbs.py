"""French verb endings between the "vous" and the "tu" forms, for the address guard.

Pure tables and suffix rules, kept apart from `bot.tutoiement` so each stays readable. They
cover what an assistant's replies use: the present, future, conditional, imperfect,
imperative and the common subjunctives of frequent verbs, plus the regular -er, -ir
(-issez) and -dre patterns. A form the rules do not know returns None and the guard asks
the LLM instead of guessing.
"""

from __future__ import annotations

from typing import Literal

Mood = Literal["ind", "imp", "subj"]

# vous-form -> tu-form (present indicative; also the subjunctive where it differs)
_IRREGULAR: dict[str, str] = {
    "êtes": "es", "avez": "as", "faites": "fais", "dites": "dis", "allez": "vas",
    "pouvez": "peux", "voulez": "veux", "devez": "dois", "savez": "sais", "voyez": "vois",
    "croyez": "crois", "partez": "pars", "sortez": "sors", "dormez": "dors", "sentez": "sens",
    "servez": "sers", "suivez": "suis", "vivez": "vis", "lisez": "lis", "buvez": "bois",
    "courez": "cours", "appelez": "appelles", "rappelez": "rappelles", "jetez": "jettes",
    "rejetez": "rejettes", "projetez": "projettes", "achetez": "achètes", "levez": "lèves",
    "relevez": "relèves", "menez": "mènes", "amenez": "amènes", "emmenez": "emmènes",
    "promenez": "promènes", "pesez": "pèses", "renouvelez": "renouvelles", "soyez": "sois",
    "ayez": "aies", "veuillez": "veuilles", "puissiez": "puisses", "fassiez": "fasses",
    "sachiez": "saches", "alliez": "ailles", "riez": "ris",
}
# compoundable endings: comprenez -> comprends, permettez -> permets, revenez -> reviens…
_COMPOUND: dict[str, str] = {
    "prenez": "prends", "mettez": "mets", "venez": "viens", "tenez": "tiens", "crivez": "cris",
    "connaissez": "connais", "duisez": "duis", "truisez": "truis", "cevez": "çois",
}
_IMPERATIVE: dict[str, str] = {
    "allez": "va", "ayez": "aie", "soyez": "sois", "sachez": "sache", "veuillez": "veuille",
}
_NOT_ER = frozenset({"es", "as"})  # irregular results that are not -er verbs
_DRE = ("attend", "répond", "vend", "entend", "descend", "rend", "perd", "dépend", "correspond",
        "suspend", "confond", "tend", "défend", "mord", "tord", "prétend", "revend", "fond")
_IER_PRESENT = frozenset({"copiez", "étudiez", "remerciez", "confiez", "appréciez", "négociez",
                          "associez", "oubliez", "publiez", "reliez", "expédiez", "priez", "triez",
                          "criez", "mariez", "variez", "niez", "pliez", "enviez", "initiez",
                          "licenciez", "souciez", "multipliez", "liez"})
_IRER_PRESENT = frozenset({"désirez", "admirez", "retirez", "tirez", "attirez", "respirez",
                           "inspirez", "aspirez", "expirez", "virez"})
_VREZ_FUTURE = frozenset({"vivrez", "suivrez", "recevrez", "devrez", "poursuivrez", "apercevrez",
                          "décevrez"})
_ISSEZ_ER = frozenset({"glissez", "hissez", "plissez", "tissez"})
_CONSONANTS = "bcdfgjklmnpqrstvwxzç"


def _accent_stem(stem: str, grave: bool) -> str:
    """préfér -> préfèr (grave=True) and back: é in the last syllable before consonants."""
    k = len(stem)
    while k > 0 and stem[k - 1] in _CONSONANTS:
        k -= 1
    if 0 < k < len(stem) and stem[k - 1] == ("é" if grave else "è"):
        return stem[: k - 1] + ("è" if grave else "é") + stem[k:]
    return stem


def pl_to_sg(verb: str, mood: Mood = "ind") -> str | None:
    """'pouvez' -> 'peux', 'regardez' -> 'regardes' (imp: 'regarde'); None if unknown."""
    v = verb.lower()
    if mood == "imp" and v in _IMPERATIVE:
        return _IMPERATIVE[v]
    out, er = _pl_to_sg(v, mood)
    if out is None:
        return None
    if mood == "imp" and er and out.endswith("es"):
        out = out[:-1]
    return out


def _pl_to_sg(v: str, mood: Mood) -> tuple[str | None, bool]:
    if v in _IRREGULAR:
        out = _IRREGULAR[v]
        return out, out.endswith("es") and out not in _NOT_ER
    for end, rep in _COMPOUND.items():
        if v.endswith(end):
            return v[: -len(end)] + rep, False
    if v in _IER_PRESENT or v.endswith("ifiez") or (mood == "imp" and v.endswith("iez")):
        return v[:-2] + "es", True  # vérifiez -> vérifies (imp: vérifie)
    if v.endswith("riez"):
        return v[:-4] + "rais", False  # conditional
    if v.endswith("iez"):
        return (v[:-3] + "es", False) if mood == "subj" else (v[:-3] + "ais", False)
    if v.endswith(("oyez", "uyez", "ayez")):
        return v[:-3] + "ies", True
    if v.endswith(("rrez", "drez", "aurez")) or v in _VREZ_FUTURE:
        return v[:-2] + "as", False  # future -> pourras, voudras, auras
    if v.endswith("erez") and not v.endswith("érez"):
        return v[:-2] + "as", False
    if v.endswith("irez") and v not in _IRER_PRESENT:
        return v[:-2] + "as", False
    if v.endswith("issez") and v not in _ISSEZ_ER:
        return v[:-4] + "s", False
    if v.endswith("dez") and v[:-2].endswith(_DRE):
        return v[:-2] + "s", False
    if v.endswith("ez") and len(v) > 3:
        return _accent_stem(v[:-2], grave=True) + "es", True
    return None, False


_IRREGULAR_SG = {sg: pl for pl, sg in _IRREGULAR.items() if pl not in ("riez",)}
_IRREGULAR_SG.update({"ris": "riez", "veuilles": "vouliez"})
_COMPOUND_SG = {sg: pl for pl, sg in _COMPOUND.items()}
_IMPERATIVE_SG = {sg: pl for pl, sg in _IMPERATIVE.items()} | {
    "dis": "dites", "fais": "faites", "appelle": "appelez", "rappelle": "rappelez",
    "jette": "jetez", "achète": "achetez", "lève": "levez", "mène": "menez", "amène": "amenez",
    "emmène": "emmenez", "pèse": "pesez", "vas": "allez",
}
_IS_IRREGULAR = {"finis": "finissez", "dis": "dites", "lis": "lisez", "vis": "vivez",
                 "suis": "suivez", "écris": "écrivez", "relis": "relisez"}


def sg_to_pl(verb: str, mood: Mood = "ind") -> str | None:
    """'peux' -> 'pouvez', 'regardes' -> 'regardez', imperative 'regarde' -> 'regardez'."""
    v = verb.lower()
    if mood == "imp":
        if v in _IMPERATIVE_SG:
            return _IMPERATIVE_SG[v]
        if v.endswith(("oie", "uie", "aie")):
            return v[:-2] + "yez"
        if v.endswith("e"):
            return _accent_stem(v[:-1], grave=False) + "ez"
    if v in _IRREGULAR_SG:
        return _IRREGULAR_SG[v]
    if v in _IS_IRREGULAR:
        return _IS_IRREGULAR[v]
    for end, rep in _COMPOUND_SG.items():
        if v.endswith(end):
            return v[: -len(end)] + rep
    if v.endswith("ras"):
        return v[:-2] + "ez"  # future
    if v.endswith("rais"):
        return v[:-4] + "riez"  # conditional
    if v.endswith("ais"):
        return v[:-3] + "iez"  # imperfect
    if v.endswith(("oies", "uies", "aies")):
        return v[:-3] + "yez"
    if v.endswith("es") and len(v) > 3:
        if mood == "subj" and v in ("puisses", "fasses", "saches"):
            return _IRREGULAR_SG[v]
        return _accent_stem(v[:-2], grave=False) + "ez"
    if v.endswith("ds"):
        return v[:-1] + "ez"
    if v.endswith("is") and len(v) > 3:
        return v[:-1] + "ssez"  # -ir verbs: finis -> finissez
    return None
