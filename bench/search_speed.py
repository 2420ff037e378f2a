"""Search latency over many stored explanations (`circuits search`), beside a numpy brute force.

    python bench/search_speed.py [--rows 10000] [--queries 9] [--random-vectors]

Writes a temporary DuckDB file with `--rows` synthetic explanations of one model's nodes (distinct
phrases put together from parts, each with a held-out score; five tasks' circuits of 400 nodes
each), embeds them the way `circuits search` backfills an older file (real all-MiniLM-L6-v2;
`--random-vectors` stores random unit vectors instead, to time only the search), then prints:

- the backfill: seconds and explanations per second;
- the query embedding alone (median);
- the search in SQL (`Store.search_explanations`, `array_cosine_similarity` over FLOAT[384] plus
  the joins for name, tasks and score), embedding excluded: no filter, --model, --task (medians);
- the whole Python call `explainer.jobs.search.search`, embedding and checks included (median);
- the numpy baseline on the same vectors held in memory (one matrix product, top 20 by
  argpartition), the time to load them from the file once, and the SQL/numpy ratio; the two
  rankings are compared.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WHAT = ["the closing quote", "the opening quote", "the keyword return", "the keyword def", "the keyword import",
        "an opening parenthesis", "a closing parenthesis", "a comma", "a colon", "the name self",
        "an attribute name after a dot", "a function name being called", "a parameter name", "a default value",
        "a number literal", "the digits of an integer", "a string prefix", "the assignment sign",
        "a comparison operator", "the keyword if", "the keyword for", "the keyword in", "the keyword None",
        "a decorator", "a docstring", "a comment", "an indented line", "the first token of a line",
        "a closing square bracket", "an opening brace", "a keyword argument", "a type annotation",
        "the return annotation arrow", "an exception name", "the keyword raise", "a module name",
        "a class name", "a list element", "a dictionary key", "an f-string placeholder"]
WHERE = ["in a function definition", "inside a string literal", "inside brackets", "after the keyword return",
         "at the end of a line", "in an import statement", "in a call to open", "inside a list comprehension",
         "in a class body", "in an if condition", "in a for loop header", "in a with statement",
         "in a dictionary literal", "in a lambda", "in an assert statement", "after an equals sign",
         "in a try block", "in a docstring", "in a test function", "in a nested call", "before a colon",
         "after a comma", "in a return statement", "in an except clause", "in a while condition"]
HOW = ["", "mostly", "especially", "and nearby tokens", "when it repeats", "but not in comments",
       "of single-quoted strings", "of double-quoted strings", "in long files", "near the top of a file",
       "in short lines", "after a blank line"]
QUERIES = ["closing quote of a string", "the keyword return", "names of functions being called",
           "numbers in the code", "indentation", "import statements", "dictionary keys",
           "parameters of a function", "text in comments", "closing brackets", "exception handling",
           "type hints"]
TASKS = ["bracket_close", "quote_close", "keyword_return", "import_name", "number_digits"]
MODEL = "bench"


def phrases(n: int, seed: int = 0) -> list[str]:
    combos = [(w, p, h) for w in WHAT for p in WHERE for h in HOW]
    if n > len(combos):
        raise SystemExit(f"at most {len(combos)} distinct synthetic explanations; ask for fewer --rows")
    picked = random.Random(seed).sample(combos, n)
    return [" ".join(x for x in (h if h in ("mostly", "especially") else "", w, p,
                                 "" if h in ("mostly", "especially") else h) if x) for w, p, h in picked]


def fill(store, texts: list[str], seed: int = 0) -> None:
    """Nodes, circuits, explanations and scores in bulk (the store's API one row at a time would take
    minutes here; these are the same columns)."""
    from sparse_model.nodes import Node

    rng = random.Random(seed)
    n = len(texts)
    nodes = [Node(f"L{i % 4}.mlp.neuron", i // 4) for i in range(n)]
    store.save_nodes(MODEL, [{"node": nd, "layer": i % 4, "mean": 0.0} for i, nd in enumerate(nodes)])
    ids = [nd.node_id(MODEL) for nd in nodes]
    for t, task in enumerate(TASKS):
        members = rng.sample(ids, min(400, n))
        store.save_circuit({"circuit_id": f"c{t}", "model": MODEL, "task": task, "status": "circuit", "settings": {}},
                           [{"node_id": m, "rank": r, "score": 1.0} for r, m in enumerate(members)], [])
    eids = [f"e{i}" for i in range(n)]
    store.con.execute(
        "INSERT INTO explanations (explanation_id, node_id, model, kind, text, candidate, selected, explainer, "
        "settings_key, purpose, created_at) SELECT e, nd, ?, 'llm', t, 0, true, 'bench', 'bench', 'circuit', now() "
        "FROM (SELECT unnest(?::VARCHAR[]) AS e, unnest(?::VARCHAR[]) AS nd, unnest(?::VARCHAR[]) AS t)",
        [MODEL, eids, ids, texts])
    store.con.execute(
        "INSERT INTO scores SELECT e, 'score', 'correlation', v, 640 "
        "FROM (SELECT unnest(?::VARCHAR[]) AS e, unnest(?::DOUBLE[]) AS v)",
        [eids, [rng.uniform(-0.2, 0.9) for _ in eids]])


def median_seconds(f, queries) -> float:
    times = []
    for q in queries:
        t = time.perf_counter()
        f(q)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=9, help="queries per measurement (the median is printed)")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--random-vectors", action="store_true", help="store random unit vectors, not real embeddings")
    args = ap.parse_args()

    import numpy as np

    from explainer.jobs.search import EMBEDDER, backfill_embeddings, search
    from explainer.simulators.embedding import EMBEDDING_SIZE, embed
    from explainer.store import Store

    queries = (QUERIES * (args.queries // len(QUERIES) + 1))[:args.queries]
    embed(["warm up"])  # the model load (seconds) is not part of any number below
    tmp = Path(tempfile.mkdtemp(prefix="search-bench-"))
    path = tmp / "c.duckdb"
    texts = phrases(args.rows)
    t = time.perf_counter()
    with Store.open(path) as store:
        fill(store, texts)
        print(f"{args.rows} synthetic explanations stored in {time.perf_counter() - t:.1f} s ({path})")
        t = time.perf_counter()
        if args.random_vectors:
            vecs = np.random.default_rng(0).standard_normal((args.rows, EMBEDDING_SIZE)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            for s in range(0, args.rows, 1000):
                store.save_embeddings(EMBEDDER, [f"e{i}" for i in range(s, min(s + 1000, args.rows))], vecs[s:s + 1000])
            print(f"random vectors stored: {time.perf_counter() - t:.1f} s")
        else:
            n = backfill_embeddings(store, progress=True)
            dt = time.perf_counter() - t
            print(f"backfill (embed + store) of {n} explanations: {dt:.1f} s, {n / dt:.0f} explanations/s")

    with Store.open(path, read_only=True) as store:
        t = time.perf_counter()
        first = store.search_explanations(embed([queries[0]])[0], EMBEDDER, limit=args.limit)
        cold = time.perf_counter() - t
        qvec = {q: embed([q])[0] for q in queries}
        t_embed = median_seconds(lambda q: embed([q]), queries)
        t_sql = median_seconds(lambda q: store.search_explanations(qvec[q], EMBEDDER, limit=args.limit), queries)
        t_model = median_seconds(lambda q: store.search_explanations(qvec[q], EMBEDDER, model=MODEL, limit=args.limit),
                                 queries)
        t_task = median_seconds(lambda q: store.search_explanations(qvec[q], EMBEDDER, task=TASKS[1], limit=args.limit),
                                queries)
        t_full = median_seconds(lambda q: search(store, q, limit=args.limit), queries)

        t = time.perf_counter()
        got = store.con.execute("SELECT explanation_id, embedding FROM explanation_embeddings ORDER BY 1").fetchall()
        ids = [g[0] for g in got]
        matrix = np.asarray([g[1] for g in got], dtype=np.float32)
        t_load = time.perf_counter() - t

    def brute(q: str) -> list[str]:
        sims = matrix @ qvec[q]
        top = np.argpartition(-sims, args.limit)[:args.limit]
        return [ids[i] for i in top[np.argsort(-sims[top], kind="stable")]]

    t_np = median_seconds(brute, queries)
    with Store.open(path, read_only=True) as store:
        same = sum(brute(q) == [r["explanation_id"] for r in store.search_explanations(qvec[q], EMBEDDER,
                                                                                         limit=args.limit)]
                   for q in queries)

    ms = lambda s: f"{s * 1000:8.2f} ms"
    print(f"\nsearch latency over {args.rows} explanations, top {args.limit}, median of {len(queries)} queries")
    print(f"  query embedding alone (all-MiniLM-L6-v2)          {ms(t_embed)}")
    print(f"  DuckDB SQL, embedding excluded, no filter          {ms(t_sql)}")
    print(f"  DuckDB SQL, embedding excluded, --model            {ms(t_model)}")
    print(f"  DuckDB SQL, embedding excluded, --task             {ms(t_task)}")
    print(f"  search() in Python, embedding and checks included  {ms(t_full)}")
    print(f"  first query on a freshly opened file (cold)        {ms(cold)}")
    print(f"  numpy brute force, vectors in memory               {ms(t_np)}")
    print(f"  numpy: loading the {args.rows} vectors once           {ms(t_load)}")
    print(f"  ratio DuckDB SQL / numpy brute force               {t_sql / t_np:8.1f} x")
    print(f"  same top {args.limit} in both, in order: {same} of {len(queries)} queries")
    print(f"  best match of {queries[0]!r}: {first[0]['explanation']!r} ({first[0]['similarity']:.3f})")


if __name__ == "__main__":
    main()
