"""Q7 extra: does a read transaction see a stable snapshot while another process commits?"""
import subprocess
import sys

import lakecommon as L

base = "/tmp/ducklake/x7"
con = L.open_lake("sqlite", base)
con.execute("BEGIN")
a = con.execute("SELECT count(v), sum(v), count(*), (SELECT id FROM lake.current_snapshot()) FROM ev").fetchone()
code = "import lakecommon as L; c=L.open_lake('sqlite','/tmp/ducklake/x7'); c.execute(\"INSERT INTO ev SELECT i, 99999, 1.0, 'iso' FROM range(500) r(i)\")"
subprocess.run([sys.executable, "-c", code], cwd="/tmp/ducklake", check=True)
b = con.execute("SELECT count(v), sum(v), count(*), (SELECT id FROM lake.current_snapshot()) FROM ev").fetchone()
con.execute("COMMIT")
c = con.execute("SELECT count(v), sum(v), count(*), (SELECT id FROM lake.current_snapshot()) FROM ev").fetchone()
print("in txn before other commit:", a); print("in txn after other commit: ", b); print("after COMMIT:              ", c)
print("sum differs only by float reordering:", a[0] == b[0] and abs(a[1] - b[1]) < 1e-6)
