"""Moves made at the same time are committed together (civicgrid.geo.group_commit), each with its own answer."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import duckdb
import pytest
from civicgrid.geo import group_commit
from civicgrid.geo.errors import ConflictError, NotFoundError
from civicgrid.geo.store import Store, locate, writing
from civicgrid.sites import cases as cs
from civicgrid.sites.cases import workflow

from conftest import build_small_city


def _open_cases(db, n):
    return [cs.create_case(db, actor="巡查员", problem_type="0101", lng=112.905 + i * 1e-4, lat=28.205,
                           time="2024-03-01 10:00")["case_id"] for i in range(n)]


def test_concurrent_moves_are_grouped_and_each_gets_its_own_answer(small_city, monkeypatch):
    ids = _open_cases(small_city, 12)
    groups = []
    real = workflow._apply_moves
    gate = threading.Event()

    def counting(con, moves):
        gate.wait(30)  # the first group waits until every request is queued
        groups.append(len(moves))
        return real(con, moves)

    monkeypatch.setattr(workflow, "_apply_moves", counting)
    monkeypatch.setattr(group_commit, "_WRITERS", {})
    # 12 registrations, one illegal move (close a found case) and a second move of case 0 in the same burst
    jobs = [(i, "register") for i in ids] + [(ids[1], "close")]
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(cs.transition, small_city, cid, to, actor="张三", at="2024-03-01 11:00")
                   for cid, to in jobs]
        threading.Timer(1.0, gate.set).start()
        answers = []
        for f in futures:
            try:
                answers.append(f.result(60))
            except ConflictError as exc:
                answers.append(exc)
    assert sum(groups) == len(jobs) and len(groups) < len(jobs)  # grouped: fewer commits than moves
    assert isinstance(answers[-1], ConflictError) and "cannot close" in str(answers[-1])
    store = Store(small_city)
    for cid, answer in zip(ids, answers[:-1], strict=True):
        assert answer["case_id"] == cid and answer["state"] == "registered"
        assert answer["next"] == ["dispatched"]
        assert [r["to_state"] for r in answer["log"]] == ["found", "registered"]
        assert answer == cs.get_case(store, cid)  # what the writer answered is what is stored
    states = store.sql(f"SELECT state, count(*) AS n FROM cases WHERE case_id IN ({', '.join(map(str, ids))}) "
                       "GROUP BY 1")
    assert states.to_dict("records") == [{"state": "registered", "n": 12}]
    log_ids = store.sql("SELECT log_id FROM case_log ORDER BY 1")["log_id"]
    assert log_ids.is_unique and len(log_ids) == 12 * 2


def test_two_moves_of_one_case_in_one_group_apply_in_order(small_city):
    (cid,) = _open_cases(small_city, 1)
    with writing(small_city) as con:
        got = workflow._apply_moves(con, [
            workflow._Move(cid, "register", "甲", workflow.parse_moment("2024-03-01 11:00")),
            workflow._Move(cid, "dispatch", "乙", workflow.parse_moment("2024-03-01 12:00"), unit="环卫所"),
            workflow._Move(cid, "register", "丙", workflow.parse_moment("2024-03-01 13:00")),  # illegal now
        ])
    assert got[0]["state"] == "registered" and len(got[0]["log"]) == 2
    assert got[1]["state"] == "dispatched" and got[1]["unit"] == "环卫所" and len(got[1]["log"]) == 3
    assert isinstance(got[2], ConflictError)
    case = cs.get_case(Store(small_city), cid)
    assert case["state"] == "dispatched" and [r["actor"] for r in case["log"]] == ["巡查员", "甲", "乙"]
    ev = Store(small_city).sql("SELECT status, deadline FROM events WHERE event_id = ?", [cid]).iloc[0]
    assert ev["status"] == "open"


def test_a_failing_group_falls_back_to_each_move_alone(small_city, monkeypatch):
    ids = _open_cases(small_city, 3)
    real = workflow._apply_moves
    gate = threading.Event()

    def flaky(con, moves):
        gate.wait(30)
        if len(moves) > 1:
            con.execute("SELECT * FROM no_such_table")  # the group's transaction fails as a whole
        if moves[0].case_id == ids[1]:
            raise RuntimeError("this one is broken")
        return real(con, moves)

    monkeypatch.setattr(workflow, "_apply_moves", flaky)
    monkeypatch.setattr(group_commit, "_WRITERS", {})
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(cs.transition, small_city, cid, "register", actor="张三") for cid in ids]
        threading.Timer(0.5, gate.set).start()
        with pytest.raises(RuntimeError, match="broken"):
            futures[1].result(60)
        assert futures[0].result(60)["state"] == futures[2].result(60)["state"] == "registered"
    states = Store(small_city).sql("SELECT case_id, state FROM cases ORDER BY case_id")
    assert states["state"].tolist() == ["registered", "found", "registered"]


def test_concurrent_creations_are_grouped_and_each_gets_its_own_answer(small_city, monkeypatch):
    # an earlier closed case nearby: the new ones of the same type rebound from it
    (old,) = _open_cases(small_city, 1)
    for to, at in (("register", "2024-03-01 10:10"), ("dispatch", "2024-03-01 10:20"),
                   ("rectify", "2024-03-01 11:00"), ("close", "2024-03-01 12:00")):
        cs.transition(small_city, old, to, actor="张三", at=at)
    with writing(small_city) as con:  # an event without a case (as an import without cases leaves it)
        con.execute("INSERT INTO events (event_id, source, problem_type, time, lng, lat, grid_code) "
                    "VALUES (500, 'complaint', '0201', TIMESTAMP '2024-03-02 08:00', 112.915, 28.215, "
                    "'430102001001004')")
    groups = []
    real = workflow._apply_creates
    gate = threading.Event()

    def counting(con, requests):
        gate.wait(30)
        groups.append(len(requests))
        return real(con, requests)

    monkeypatch.setattr(workflow, "_apply_creates", counting)
    monkeypatch.setattr(group_commit, "_WRITERS", {})
    jobs = [dict(problem_type="0101", lng=112.905 + i * 1e-5, lat=28.205, time="2024-03-05 09:00")
            for i in range(8)]
    jobs += [dict(problem_type="暴露垃圾", lng=112.905, lat=28.205, time="2024-03-05 09:30", dispatch=True,
                  unit="环卫所"),
             dict(problem_type="no such type", lng=112.905, lat=28.205),
             dict(event_id=500), dict(event_id=500), dict(event_id=999_999)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(cs.create_case, small_city, actor="巡查员", **job) for job in jobs]
        threading.Timer(1.0, gate.set).start()
        answers = []
        for f in futures:
            try:
                answers.append(f.result(60))
            except Exception as exc:
                answers.append(exc)
    assert sum(groups) == len(jobs) and len(groups) < len(jobs)
    made, refused = answers[:9], answers[9:]
    assert all(isinstance(a, dict) for a in made), made
    assert type(refused[0]).__name__ == "NotFoundError" and "no such type" in str(refused[0])
    assert [type(a).__name__ for a in refused[1:3]].count("ConflictError") == 1  # one case per event
    case500 = next(a for a in refused[1:3] if isinstance(a, dict))
    assert case500["case_id"] == 500 and case500["problem_type"] == "0201" and case500["deadline"] is not None
    assert type(refused[3]).__name__ == "NotFoundError" and "no event 999999" in str(refused[3])
    ids = [a["case_id"] for a in made]
    assert len(set(ids)) == 9 and min(ids) > 500
    store = Store(small_city)
    for a in [*made, case500]:
        assert a == cs.get_case(store, a["case_id"])
    assert all(a["state"] == "found" and a["rebound_of"] == old for a in made[:8])
    dispatched = made[8]
    assert dispatched["state"] == "dispatched" and dispatched["unit"] == "环卫所" and dispatched["rebound_of"] == old
    assert [r["to_state"] for r in dispatched["log"]] == ["found", "registered", "dispatched"]
    ev = store.sql(f"SELECT event_id, status, rebound_of, grid_code, dedup_key FROM events "
                   f"WHERE event_id IN ({', '.join(map(str, ids))}) ORDER BY event_id")
    assert (ev["rebound_of"] == old).all() and (ev["grid_code"] == "430102001001001").all()
    assert ev["dedup_key"].tolist() == [f"case:{i}" for i in sorted(ids)]
    assert store.sql("SELECT log_id FROM case_log")["log_id"].is_unique


def test_the_process_exits_cleanly_after_grouped_writes(small_city, civicgrid_cli):
    """A command that wrote through a writer thread exits with its own status (the thread is ended before the
    interpreter shuts down; left inside DuckDB's objects it aborted the process with status 134)."""
    import subprocess

    made = subprocess.run([*civicgrid_cli, "cases", "create", "--db", str(small_city), "--type", "0201",
                           "--lng", "112.94", "--lat", "28.23", "--actor", "cli"], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-500:]
    case_id = int(Store(small_city).sql("SELECT max(case_id) AS c FROM cases WHERE case_id IN "
                                        "(SELECT case_id FROM case_log WHERE actor = 'cli')")["c"][0])
    moved = subprocess.run([*civicgrid_cli, "cases", "move", str(case_id), "registered", "--db", str(small_city),
                            "--actor", "cli"], capture_output=True, text=True)
    assert moved.returncode == 0, moved.stderr[-500:]
    assert Store(small_city).sql(f"SELECT state FROM cases WHERE case_id = {case_id}")["state"][0] == "registered"


COMMITTER = """
import sys
from civicgrid.sites import cases as cs
case = cs.create_case(sys.argv[1], actor="committer", problem_type="0201", lng=112.94, lat=28.23)
print("ready", case["case_id"], flush=True)
sys.stdin.read()  # serve the other processes' writes until the test closes stdin
"""


@contextlib.contextmanager
def _committer(db: str, monkeypatch):
    """Another process of this user that became the store's committer (sharing on here too); ended at exit, and
    this process's writers and exchanges stopped."""
    monkeypatch.setenv(group_commit.SHARE_ENV, "1")
    monkeypatch.setattr(group_commit, "_WRITERS", {})
    monkeypatch.setattr(group_commit, "_EXCHANGES", {})
    committer = subprocess.Popen([sys.executable, "-c", COMMITTER, db], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
    try:
        assert committer.stdout.readline().startswith("ready")
        yield committer
    finally:
        if committer.poll() is None:
            committer.stdin.close()
            committer.wait(60)
        for exchange in group_commit._EXCHANGES.values():
            exchange.close()
        for writer in group_commit._WRITERS.values():
            writer.stop()


def test_processes_hand_their_writes_to_one_committer(any_store, tmp_path, monkeypatch):
    """With sharing on (``civicgrid serve``'s workers), a process's writes are committed by the store's
    committer process with its own, each answer (and error) going back to the process that asked; when the
    committer is killed, the next write makes the writing process the committer, and nothing is lost."""
    db = str(build_small_city(any_store, tmp_path))
    key = locate(db)
    with _committer(db, monkeypatch) as committer:
        made = cs.create_case(db, actor="handed", problem_type="0201", lng=112.905, lat=28.205)
        moved = cs.transition(db, made["case_id"], "register", actor="handed")
        with pytest.raises(ConflictError, match="cannot close"):
            cs.transition(db, made["case_id"], "close", actor="handed")
        assert key not in group_commit._WRITERS and key not in group_commit._EXCHANGES  # nothing written here
        assert moved == cs.get_case(Store(db), made["case_id"])
        assert [r["to_state"] for r in moved["log"]] == ["found", "registered"]
        real = workflow._apply_moves
        monkeypatch.setattr(workflow, "_apply_moves", lambda con, moves: real(con, moves))  # cannot be pickled
        here = cs.transition(db, made["case_id"], "dispatch", actor="handed")  # so it is committed here
        assert key in group_commit._WRITERS and key not in group_commit._EXCHANGES and here["state"] == "dispatched"
        monkeypatch.setattr(workflow, "_apply_moves", real)
        committer.send_signal(signal.SIGKILL)
        committer.wait(30)
        again = cs.transition(db, made["case_id"], "rectify", actor="handed")  # this process is the committer now
        assert key in group_commit._EXCHANGES and again["state"] == "rectified"
        assert again == cs.get_case(Store(db), made["case_id"])
    states = Store(db).sql("SELECT actor, to_state FROM case_log WHERE actor IN ('handed', 'committer') "
                           "ORDER BY log_id")
    assert states.values.tolist() == [["committer", "found"], ["handed", "found"], ["handed", "registered"],
                                      ["handed", "dispatched"], ["handed", "rectified"]]


def test_a_write_is_never_handed_to_another_users_process(small_city, monkeypatch):
    """The committer's socket name (abstract namespace) can be taken by any user: a process whose peer on it
    is not of its own user (kernel's ``SO_PEERCRED``) commits its write itself and reads nothing from it."""
    db = str(small_city)
    key = locate(db)
    with _committer(db, monkeypatch):
        own = group_commit.os.getuid()
        monkeypatch.setattr(group_commit.os, "getuid", lambda: own + 1)  # the committer is "another user" now
        made = cs.create_case(db, actor="alone", problem_type="0201", lng=112.905, lat=28.205)
        assert key in group_commit._WRITERS  # committed by this process's own writer
        assert key not in group_commit._EXCHANGES  # and it did not take the socket either
        monkeypatch.setattr(group_commit.os, "getuid", lambda: own)
        moved = cs.transition(db, made["case_id"], "register", actor="handed")  # same user: handed over
        assert moved["state"] == "registered" and moved == cs.get_case(Store(db), made["case_id"])
    log = Store(db).sql("SELECT actor, to_state FROM case_log WHERE actor IN ('alone', 'handed') ORDER BY log_id")
    assert log.values.tolist() == [["alone", "found"], ["handed", "registered"]]


def _plain_read(db, ids):
    """The cases ``ids`` and their audit trails read by a new connection of its own (not this process's store)."""
    from civicgrid.geo.store import extension_path

    location = locate(db)
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False})
    for name in ("spatial", "ducklake", "sqlite_scanner" if location.kind == "sqlite" else "postgres_scanner"):
        con.load_extension(str(extension_path(name)))
    con.execute(location.attach_sql("plain", read_only=True))
    id_list = ", ".join(map(str, ids))
    cases = con.execute(f"SELECT {workflow.CASE_COLUMNS} FROM plain.cases WHERE case_id IN ({id_list}) "
                        "ORDER BY case_id").fetchall()
    trails = con.execute(f"SELECT {workflow._LOG_READ} FROM plain.case_log WHERE case_id IN ({id_list}) "
                         "ORDER BY log_id").fetchall()
    con.close()
    names = [c.strip() for c in workflow.CASE_COLUMNS.split(",")]
    log_names = [c.strip() for c in workflow._LOG_READ.split(",")]
    out = {row[0]: (dict(zip(names, row, strict=True)), []) for row in cases}
    for row in trails:
        out[row[1]][1].append(dict(zip(log_names, row, strict=True)))
    return out


def test_what_the_writer_keeps_between_groups_is_what_a_plain_read_gives(any_store, tmp_path):
    db = build_small_city(any_store, tmp_path)
    ids = _open_cases(db, 4)
    cs.transition(db, ids[0], "register", actor="张三")
    cs.transition(db, ids[1], "register", actor="张三")
    cs.transition(db, ids[1], "dispatch", actor="张三", unit="某单位", note="急")
    cs.transition(db, ids[1], "rectify", actor="张三", photo="a.jpg")  # written onto its event too
    writer = group_commit._WRITERS[locate(db)]
    assert writer.kept is not None  # nothing else wrote since: the last group's memory is kept
    kept = writer.kept[1]["cases"]
    plain = _plain_read(db, ids)
    assert set(ids) <= set(kept)
    for cid in ids:
        assert kept[cid] == plain[cid], cid  # the rows and audit trails as stored, value for value
    # the next ids kept are those after the stored ones
    top_log = Store(db).sql("SELECT max(log_id) AS m FROM case_log")["m"].iloc[0]
    top_event = Store(db).sql("SELECT max(event_id) AS m FROM events")["m"].iloc[0]
    assert writer.kept[1]["next-id:case_log"] == top_log + 1
    assert writer.kept[1].get("next-id:events", top_event + 1) == top_event + 1


def test_a_write_made_elsewhere_is_seen_by_the_next_group(any_store, tmp_path):
    db = build_small_city(any_store, tmp_path)
    a, b = _open_cases(db, 2)
    assert group_commit._WRITERS[locate(db)].kept is not None
    # another writer (any process or connection, not the group writer) moves case a and adds an event
    with writing(db) as con:
        log_id = con.execute("SELECT max(log_id) + 1 FROM case_log").fetchone()[0]
        con.execute(f"UPDATE cases SET state = 'registered' WHERE case_id = {a}")
        con.execute("INSERT INTO case_log (log_id, case_id, changed_at, actor, from_state, to_state) "
                    f"VALUES ({log_id}, {a}, TIMESTAMP '2024-03-01 10:30:00', 'other', 'found', 'registered')")
        event_id = con.execute("SELECT max(event_id) + 1 FROM events").fetchone()[0]
        con.execute("INSERT INTO events (event_id, source, problem_type, time, status, lng, lat) VALUES "
                    f"({event_id}, 'complaint', '0101', TIMESTAMP '2024-03-01 10:00:00', 'open', 112.905, 28.205)")
    with pytest.raises(ConflictError):  # the writer's memory still says found: it must not be believed
        cs.transition(db, a, "register", actor="张三")
    moved = cs.transition(db, a, "dispatch", actor="张三")
    assert [r["to_state"] for r in moved["log"]] == ["found", "registered", "dispatched"]
    assert len({r["log_id"] for r in moved["log"]}) == 3 and moved["log"][1]["log_id"] == log_id
    (c,) = _open_cases(db, 1)
    assert c > event_id  # the event written elsewhere keeps its id
    store = Store(db)
    assert store.sql("SELECT count(*) AS n, count(DISTINCT log_id) AS d FROM case_log").iloc[0].tolist() == \
        store.sql("SELECT count(*) AS n, count(*) AS d FROM case_log").iloc[0].tolist()
    assert cs.get_case(store, a) == moved and cs.get_case(store, b)["state"] == "found"


def test_a_lease_taken_between_two_groups_holds_the_next_group(pg_server, tmp_path, monkeypatch):
    """PostgreSQL catalog: a group whose transaction reads the snapshot the writer's last group committed does not
    read the maintenance lease again (nothing was committed since); after a lease of another machine is
    committed it does, and waits (then gives up, writing nothing) until the lease ends."""
    from datetime import UTC, datetime, timedelta

    from civicgrid.geo import store as st

    monkeypatch.setenv("CIVICGRID_DATA_PATH", str(tmp_path / "city-data"))
    db = build_small_city(pg_server(f"city_lease_chain_{abs(hash(str(tmp_path))) % 10**9}"), tmp_path)
    looks = []
    holder = st.lease_holder
    monkeypatch.setattr(st, "lease_holder", lambda con: looks.append(1) or holder(con))
    monkeypatch.setattr(st, "LEASE_WAIT_S", 0.3)
    monkeypatch.setattr(group_commit, "WRITE_TRIES", 1)
    (cid,) = _open_cases(db, 1)
    writer = group_commit._WRITERS[locate(db)]
    assert writer.kept is not None
    before = len(looks)
    cs.transition(db, cid, "register", actor="张三")  # nothing committed since the creation: no look
    assert len(looks) == before

    def lease(seconds: float) -> None:  # another machine's maintenance, as it sets its lease
        with st.writers_paused(db) as con:
            con.execute("BEGIN TRANSACTION")
            until = (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()
            st.set_meta(con, st.LEASE_KEY, f"{until} another-machine")
            con.execute("COMMIT")

    lease(600)
    with pytest.raises(st.WriteConflictError, match="another-machine"):
        cs.transition(db, cid, "dispatch", actor="张三")
    assert len(looks) > before
    assert cs.get_case(Store(db), cid)["state"] == "registered"  # nothing written
    lease(-1)  # ended
    assert cs.transition(db, cid, "dispatch", actor="张三")["state"] == "dispatched"
    assert [r["to_state"] for r in cs.get_case(Store(db), cid)["log"]] == ["found", "registered", "dispatched"]


def test_a_failed_group_keeps_nothing(small_city, monkeypatch):
    (cid,) = _open_cases(small_city, 1)
    writer = group_commit._WRITERS[locate(small_city)]
    assert writer.kept is not None
    def failing(con, cases):  # after the moves' own statements, before the commit
        raise RuntimeError("disk full")

    monkeypatch.setattr(workflow, "_mirror_events", failing)
    with pytest.raises(RuntimeError):
        cs.transition(small_city, cid, "register", actor="张三")
    assert writer.kept is None
    monkeypatch.undo()
    assert cs.get_case(Store(small_city), cid)["state"] == "found"
    assert cs.transition(small_city, cid, "register", actor="张三")["state"] == "registered"
    assert writer.kept[1]["cases"][cid] == _plain_read(small_city, [cid])[cid]


def test_get_case_reads_the_case_and_its_trail_as_the_plain_reads_do(small_city):
    a, b = _open_cases(small_city, 2)
    cs.transition(small_city, a, "register", actor="张三", note="一")
    cs.transition(small_city, a, "dispatch", actor="张三")
    store = Store(small_city)
    for cid in (a, b):
        row = workflow._case_row(store, cid)
        trail = [{k: workflow._py(v) for k, v in r.items()} for r in cs.case_log(store, cid).to_dict("records")]
        assert cs.get_case(store, cid) == dict(row, log=trail, next=list(workflow.NEXT_STATES[row["state"]]))
    with pytest.raises(NotFoundError, match="no case"):
        cs.get_case(store, 10**9)


def test_a_change_of_the_small_tables_made_elsewhere_is_seen_by_the_next_creation(small_city):
    (a,) = _open_cases(small_city, 1)
    (b,) = _open_cases(small_city, 1)  # the writer's memory holds the problem types now
    writer = group_commit._WRITERS[locate(small_city)]
    assert "read:case-reference" in writer.kept[1]
    store = Store(small_city)
    assert cs.get_case(store, a)["deadline"] == cs.get_case(store, b)["deadline"]
    with writing(small_city) as con:  # another writer gives 0101 a much longer time to rectify
        con.execute("UPDATE problem_types SET deadline_value = deadline_value * 10 WHERE code = '0101'")
    (c,) = _open_cases(small_city, 1)
    assert cs.get_case(store, c)["deadline"] > cs.get_case(store, a)["deadline"]


def test_the_writer_keeps_at_most_its_bound_of_cases_and_reads_the_others(small_city, monkeypatch):
    monkeypatch.setattr(workflow, "KEPT_CASES", 2)
    ids = _open_cases(small_city, 3)
    writer = group_commit._WRITERS[locate(small_city)]
    assert list(writer.kept[1]["cases"]) == ids[1:]  # the oldest dropped
    moved = cs.transition(small_city, ids[0], "register", actor="张三")  # read again from the store
    assert moved == cs.get_case(Store(small_city), ids[0])
    assert list(writer.kept[1]["cases"]) == [ids[2], ids[0]]
    assert writer.kept[1]["cases"][ids[0]] == _plain_read(small_city, [ids[0]])[ids[0]]
