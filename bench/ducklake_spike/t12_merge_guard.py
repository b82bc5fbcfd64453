"""DuckLake 1.5.5, PostgreSQL catalog: a compaction loses an UPDATE/DELETE committed meanwhile (DUCKLAKE.md section 11),
and a compaction cannot share its transaction with a change, so the `meta` row every id-taking write rewrites cannot
guard it. Run: python t12_merge_guard.py (a server as pgctl.sh starts; PGSOCK=dir PGPORT=port otherwise).
guard=False: merge alone (the loss); guard=True: the merge's transaction also rewrites the id-claim row (refused:
"Transactions can either make changes OR perform compaction - not both", so it never merges).
"""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("PGSOCK", "/tmp/ducklake/pg")
sys.argv = ["t11", "pg", "none"]
import importlib.util
spec = importlib.util.spec_from_file_location("t11", os.path.join(os.path.dirname(os.path.abspath(__file__)), "t11_maint_pieces.py"))
t11 = importlib.util.module_from_spec(spec); spec.loader.exec_module(t11)
L = t11.L
GUARD = "DELETE FROM meta WHERE k = 'ids.taken'; INSERT INTO meta VALUES ('ids.taken', 'x')"
def fresh():
    con = t11.fresh()
    con.execute("CREATE TABLE meta (k VARCHAR, v VARCHAR)")
    con.execute("INSERT INTO meta VALUES ('ids.taken', '0')")
    return con
for guard_m in (False, True):
    for wname in ("update", "delete"):
        for order in ("m_first", "w_first"):
            fresh().close()
            m = L.open_lake("pg", t11.BASE); w = L.open_lake("pg", t11.BASE)
            msql = t11.MAINT["merge"]; wsql = t11.WRITES[wname]
            if order == "m_first":
                w.execute("BEGIN"); w.execute(GUARD); w.execute(wsql)
                m.execute("BEGIN")
                rb = t11.attempt(m, (GUARD + ";" if guard_m else "") + msql)
                rm = t11.attempt(m, "COMMIT") if rb == "ok" else rb
                rw = t11.attempt(w, "COMMIT")
            else:
                m.execute("BEGIN")
                rb = t11.attempt(m, (GUARD + ";" if guard_m else "") + msql)
                rw = t11.attempt(w, "BEGIN; " + GUARD + "; " + wsql + "; COMMIT")
                rm = t11.attempt(m, "COMMIT") if rb == "ok" else rb
            r = L.open_lake("pg", t11.BASE)
            good = t11.check(r, wname, rw == "ok")
            files = r.execute("SELECT count(*) FROM ducklake_list_files('lake', 'ev')").fetchone()[0]
            print(f"guard={guard_m} {wname:7} {order:8} maint={rm[:70]:70} write={rw[:70]:70} correct={good} files={files}", flush=True)
            for c in (m, w, r): c.close()
