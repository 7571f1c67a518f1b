import sys, time, statistics, re
from pathlib import Path
sys.path.insert(0, ".")
from benchmarks.search import QUESTIONS
from core.retrieval import STOPWORDS
from core.library import Library
W = re.compile(r"\w\w+")
def expr(q):
    words = list(dict.fromkeys(w.lower() for w in W.findall(q)))
    return " OR ".join(f'"{w}"' for w in ([w for w in words if w not in STOPWORDS] or words))
SUB = """SELECT c.id, hit.score, c.text, d.name FROM (SELECT rowid, bm25(chunks_fts) AS score FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY score LIMIT 5) hit
 JOIN chunks c ON c.id = hit.rowid JOIN documents d ON d.id = c.document_id ORDER BY hit.score"""
if __name__ == "__main__":
    lib = Library(Path("/tmp/searchlib/library"))
    n = lib.db.execute("select max(rowid) from chunks").fetchone()[0]
    def prune(q):
        words = [w.strip('"') for w in expr(q).split(" OR ")]
        dfs = {w: lib.db.execute("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?", [f'"{w}"']).fetchone()[0] for w in words}
        kept = [w for w in words if dfs[w] <= n / 10] or [min(words, key=dfs.get)]
        return " OR ".join(f'"{w}"' for w in kept)
    for name, fn in [("sub", lambda q: list(lib.db.execute(SUB, [expr(q)]))), ("sub+prune", lambda q: list(lib.db.execute(SUB, [prune(q)])))]:
        ts=[]
        for q in QUESTIONS:
            for _ in range(3):
                t=time.perf_counter(); fn(q); ts.append(time.perf_counter()-t)
        print(name, statistics.median(ts)*1000, sorted(ts)[int(len(ts)*.95)]*1000)
