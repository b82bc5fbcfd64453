"""Killed writers, imports and services lose nothing acknowledged and leave nothing half-written (both catalogs).

Eight writer processes open and move cases, two reader processes check the store's invariants in single
statements (one snapshot each), an importer process imports file after file, and a ``civicgrid serve`` takes
case writes over HTTP. Round after round one of them (a writer, the importer or the service, in turn) is killed
with SIGKILL at a random moment and started again. After each kill every acknowledged write must be in the store,
no reader may have seen a half-written state, and at the end a case move and an import in this process succeed
and no file of a killed import is left. ``CIVICGRID_FAULT_ROUNDS`` sets the number of kills (default 20).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from civicgrid.geo import staging
from civicgrid.geo.store import Store, locate
from civicgrid.geo.users import add_user
from civicgrid.sites import cases as cs
from civicgrid.sites.events import import_events

from conftest import build_small_city

ROUNDS = int(os.environ.get("CIVICGRID_FAULT_ROUNDS", "20"))
ROOT = Path(__file__).resolve().parents[1]

WRITER = textwrap.dedent("""
    import random, sys, time
    from civicgrid.sites import cases as cs
    db, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    mine = []
    steps = ["register", "dispatch", "rectify", "close"]
    while True:
        c = cs.create_case(db, actor=f"w{seed}", problem_type="0101", lng=112.9 + rng.random() * 0.02,
                           lat=28.2 + rng.random() * 0.02)
        print("C", c["case_id"], flush=True)
        mine.append([c["case_id"], 0])
        for case in rng.sample(mine, min(2, len(mine))):
            if case[1] < len(steps):
                moved = cs.transition(db, case[0], steps[case[1]], actor=f"w{seed}")
                case[1] += 1
                print("M", case[0], moved["state"], flush=True)
        time.sleep(rng.random() * 0.05)
""")

READER = textwrap.dedent("""
    import sys, time
    from civicgrid.geo.store import Store
    store = Store(sys.argv[1])
    CHECK = '''
        SELECT
          (SELECT count(*) FROM cases c WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = c.event_id))
            AS case_without_event,
          (SELECT count(*) FROM cases c WHERE NOT EXISTS
             (SELECT 1 FROM case_log l WHERE l.case_id = c.case_id AND l.to_state = 'found')) AS case_without_audit,
          (SELECT count(*) FROM case_log l WHERE NOT EXISTS (SELECT 1 FROM cases c WHERE c.case_id = l.case_id))
            AS audit_without_case,
          (SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM cases c WHERE c.event_id = e.event_id))
            AS event_without_case,
          (SELECT count(*) FROM cases c JOIN (SELECT case_id, arg_max(to_state, log_id) AS s FROM case_log
             GROUP BY 1) l USING (case_id) WHERE l.s <> c.state) AS state_not_last_step,
          (SELECT count(*) FROM events e JOIN cases c ON c.event_id = e.event_id
             WHERE e.status <> CASE WHEN c.state = 'closed' THEN 'closed' ELSE 'open' END) AS event_out_of_sync,
          (SELECT count(*) FROM (SELECT import_id, count(*) AS n FROM events WHERE import_id IS NOT NULL GROUP BY 1) x
             LEFT JOIN imports i USING (import_id) WHERE i.loaded IS DISTINCT FROM x.n) AS partial_import,
          (SELECT count(*) - count(DISTINCT event_id) FROM events) AS repeated_event_id,
          (SELECT count(*) - count(DISTINCT log_id) FROM case_log) AS repeated_log_id
    '''
    while True:
        row = store.sql(CHECK).iloc[0].to_dict()
        bad = {k: int(v) for k, v in row.items() if v}
        print(("BAD " + repr(bad)) if bad else "OK", flush=True)
        time.sleep(0.2)
""")

IMPORTER = textwrap.dedent("""
    import sys
    import pandas as pd
    from civicgrid.sites import events as sev
    db, folder, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sev.IMPORT_BATCH_ROWS = 200  # several staged files per import
    for k in range(first, first + 1000):
        n = 1000
        path = f"{folder}/imp{k}.parquet"
        pd.DataFrame({"id": [f"I{k}-{i}" for i in range(n)], "time": ["2024-05-01 10:00"] * n,
                      "lng": [112.9 + (i % 200) * 1e-4 for i in range(n)],
                      "lat": [28.2 + (i // 200) * 1e-3 for i in range(n)], "type": ["0101"] * n}
                     ).to_parquet(path, index=False)
        report = sev.import_events(path, db=db, progress=False)
        print("I", report.import_id, report.loaded, flush=True)
""")


class _Proc:
    """A child process whose stdout lines are collected (every line is an acknowledged write)."""

    def __init__(self, args: list[str], env: dict) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     cwd=ROOT)
        self.lines: list[str] = []
        self.errors: list[str] = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.errors), daemon=True).start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        time.sleep(0.2)  # the reader threads take the last lines


class _Service:
    """``civicgrid serve`` plus a client thread writing cases over HTTP (answers 201/200 are acknowledged)."""

    def __init__(self, cli: list[str], db: str, env: dict, token: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([*cli, "serve", "--db", db, "--port", str(self.port), "--log-level",
                                      "warning", "--maintain-hours", "0", "--workers", "1"], env=env, cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.token = token
        self.acked: list[tuple[str, int, str | None]] = []
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()

    def _post(self, path: str, body: dict) -> dict | None:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json",
                                                             "Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return None

    def _write(self) -> None:
        rng = random.Random(self.port)
        while not self.stop.is_set():
            case = self._post("/api/cases", {"problem_type": "0101", "lng": 112.9 + rng.random() * 0.02,
                                             "lat": 28.2 + rng.random() * 0.02})
            if case is None:
                if self.proc.poll() is not None:
                    return
                time.sleep(0.2)
                continue
            self.ready.set()
            self.acked.append(("C", case["case_id"], None))
            moved = self._post(f"/api/cases/{case['case_id']}/transitions", {"to": "register"})
            if moved is not None:
                self.acked.append(("M", moved["case_id"], moved["state"]))

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.stop.set()
        self.thread.join(70)


def _acked(lines: list[str]) -> tuple[set[int], set[tuple[int, str]], set[tuple[int, int]]]:
    created, moved, imported = set(), set(), set()
    for line in lines:
        kind, *rest = line.split() or [""]
        if kind == "C":
            created.add(int(rest[0]))
        elif kind == "M":
            moved.add((int(rest[0]), rest[1]))
        elif kind == "I":
            imported.add((int(rest[0]), int(rest[1])))
    return created, moved, imported


def _check_acknowledged(db: str, lines: list[str]) -> dict[str, int]:
    created, moved, imported = _acked(lines)
    store = Store(db)
    cases = set(store.sql("SELECT case_id FROM cases")["case_id"].astype(int))
    assert created <= cases, f"acknowledged cases missing: {sorted(created - cases)[:10]}"
    log = store.sql("SELECT case_id, to_state FROM case_log")
    steps = set(zip(log["case_id"].astype(int), log["to_state"], strict=True))
    assert moved <= steps, f"acknowledged moves missing: {sorted(moved - steps)[:10]}"
    imports = store.sql("SELECT i.import_id, i.loaded, count(e.event_id) AS n FROM imports i "
                        "LEFT JOIN events e ON e.import_id = i.import_id GROUP BY ALL")
    stored = {(int(r.import_id), int(r.loaded)) for r in imports.itertuples() if r.n == r.loaded}
    assert imported <= stored, f"acknowledged imports missing or partial: {sorted(imported - stored)}"
    return {"cases": len(created), "moves": len(moved), "imports": len(imported)}


def test_kill_writers_imports_and_the_service_at_random_moments(any_store, tmp_path, civicgrid_cli):
    db = build_small_city(any_store, tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    py = sys.executable
    _, token = add_user(db, "巡查员甲", role="inspector")
    rng = random.Random(17)
    writers = [_Proc([py, "-c", WRITER, db, str(i)], env) for i in range(8)]
    readers = [_Proc([py, "-c", READER, db], env) for _ in range(2)]
    files = tmp_path / "imports"
    files.mkdir()
    next_file = [0]

    def start_importer() -> _Proc:
        next_file[0] += 1000
        return _Proc([py, "-c", IMPORTER, db, str(files), str(next_file[0])], env)

    importer = start_importer()
    service = _Service(civicgrid_cli, db, env, token)
    done: list[str] = []  # acknowledged writes of killed processes
    kills = {"writer": 0, "import": 0, "service": 0}
    try:
        deadline = time.monotonic() + 300  # everyone at work before the first kill
        while not (importer.lines and service.ready.is_set() and all(w.lines for w in writers)):
            assert time.monotonic() < deadline, [importer.errors[-5:], [w.errors[-5:] for w in writers]]
            time.sleep(0.5)
        for round_ in range(ROUNDS):
            victim = ("writer", "import", "service")[round_ % 3]
            time.sleep(rng.uniform(0.5, 4.0))
            if victim == "writer":
                i = rng.randrange(len(writers))
                writers[i].kill()
                done += writers[i].lines
                writers[i] = _Proc([py, "-c", WRITER, db, str(100 + round_)], env)
            elif victim == "import":
                importer.kill()
                done += importer.lines
                importer = start_importer()
            else:
                service.ready.wait(120)
                service.kill()
                done += [f"{k} {i} {s}" if s else f"{k} {i}" for k, i, s in service.acked]
                service = _Service(civicgrid_cli, db, env, token)
            kills[victim] += 1
            _check_acknowledged(db, done)
            for r in readers:
                assert r.proc.poll() is None, "\n".join(r.errors[-20:])
                bad = [line for line in r.lines if line.startswith("BAD")]
                assert not bad, bad[:3]
    finally:
        for p in [*writers, importer, *readers]:
            p.kill()
        service.kill()
    for p in [*writers, importer]:
        done += p.lines
    done += [f"{k} {i} {s}" if s else f"{k} {i}" for k, i, s in service.acked]
    totals = _check_acknowledged(db, done)
    assert all(kills.values()) and totals["cases"] > 10 and totals["moves"] > 5 and totals["imports"] > 0, totals
    assert sum(line.startswith("OK") for r in readers for line in r.lines) > 10
    # the next case move and import succeed; nothing of a killed import is left
    case = cs.create_case(db, actor="巡查员乙", problem_type="0101", lng=112.905, lat=28.205)
    assert cs.transition(db, case["case_id"], "register", actor="巡查员乙")["state"] == "registered"
    (tmp_path / "last.csv").write_text("id,time,lng,lat,type\nL1,2024-06-01 09:00,112.905,28.205,0101\n")
    assert import_events(tmp_path / "last.csv", db=db, progress=False).loaded == 1
    assert not staging.leftover_files(Store(db).cursor(), locate(db))
    print(f"kills {kills}; acknowledged {totals}")
