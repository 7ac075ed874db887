"""Plain record builders for the pure bot tests (no database, no fixtures)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from memory.records import ConsigneRecord, FactRecord, PersonRecord, Recalled, SouvenirRecord

T0 = datetime(2025, 3, 4, 13, 5, tzinfo=UTC)


def person(pid: int, name: str, relation: str | None, style: str | None = None) -> PersonRecord:
    return PersonRecord(id=pid, personne=name, relation=relation, comment_interagir=style,
                        details={}, cree_le=T0, bloque=False, jamais_hors_serveur=False)


LUDO = person(1, "Ludo", "créateur", "tutoie, chaleureux, direct")
JULIE = person(2, "Julie", "équipe")
DUPONT = person(3, "M. Dupont", "client")


def fact(fid: int, sujet: str, predicat: str, objet: str, *, relation_id: int | None = None,
         public: bool = False, confiance: float = 0.9) -> FactRecord:
    return FactRecord(id=fid, sujet=sujet, predicat=predicat, objet=objet, confiance=confiance,
                      source_souvenir_id=None, cree_le=T0, maj_le=T0, valide_depuis=T0,
                      valide_jusqu_a=None, remplace_par=None, relation_id=relation_id,
                      public=public)


def consigne(cid: int, texte: str, audience: str = "interne") -> ConsigneRecord:
    return ConsigneRecord(id=cid, texte=texte, active=True, source="ludo", cree_le=T0,
                          audience=audience)


def recalled(sid: int, contenu: str, *, relation_id: int | None = None, public: bool = False,
             score: float = 1.0) -> Recalled:
    s = SouvenirRecord(id=sid, timestamp=T0 - timedelta(days=sid), type="conversation",
                       source="telegram", contenu=contenu, resume=None, importance=5,
                       metadata={}, relation_id=relation_id, public=public)
    return Recalled(souvenir=s, relevance=score, score=score)


LUDO_FACTS = [
    fact(10, "Ludo", "habite à", "Peyrebrune", relation_id=1),
    fact(11, "Ludo", "a pour âge", "58 ans", relation_id=1),
    fact(12, "Ludo", "négocie en secret", "le rachat de l'agence de Vergt", relation_id=1),
]
DUPONT_FACTS = [fact(20, "M. Dupont", "cherche", "une longère près du Bugue", relation_id=3)]
CONSIGNES = [consigne(1, "Ne jamais donner l'adresse exacte d'un bien avant la visite.", "tous"),
             consigne(2, "Signer les courriels « Axi, pour ICI Dordogne ».")]
