"""Audiences and fan-out in PartitionProcessor: scatter, local chunks, hybrid split, recovery."""

import orjson
import pytest

from notiflow.topics import partition_for
from operators.audiences import AudienceIndex, PresenceTable
from operators.fanout import FANOUT_KEY, FanoutJobs, summarize_progress
from operators.partition import (
    ASAP,
    PRESENCE,
    REQUEST,
    SETTINGS,
    SUBSCRIPTIONS,
    PartitionProcessor,
)
from schemas.errors import ValidationFailed
from schemas.presence import decode_presence
from schemas.subscription import decode_subscription, parse_subscription_key

N = 4
NOW = 1_764_050_000_000


def users_in(p: int, n: int, prefix: str = "f") -> list[str]:
    out, i = [], 0
    while len(out) < n:
        if partition_for(f"{prefix}{i}", N) == p:
            out.append(f"{prefix}{i}")
        i += 1
    return out


def audience_req(kind: str = "followers", ident: str = "star", **kw) -> bytes:
    aud = {"kind": kind} if kind == "all" else {"kind": kind, "id": ident}
    if "hybrid" in kw:
        aud["hybrid"] = kw.pop("hybrid")
    body = {"id": kw.pop("id", "fan1"), "type": "social.post", "created_at": NOW - 10,
            "audience": aud, "title": "New post", "body": "star posted", **kw}
    return orjson.dumps(body)


def sub(user: str, target: str) -> tuple:
    return (SUBSCRIPTIONS, f"{user}|{target}".encode(),
            orjson.dumps({"v": 1, "user_id": user, "target": target}), 0)


def seen(user: str, ms: int = NOW - 60_000) -> tuple:
    return (PRESENCE, user.encode(), orjson.dumps({"v": 1, "user_id": user, "seen_ms": ms}), 0)


def drain(proc: PartitionProcessor, now: int = NOW, limit: int = 100):
    """Tick until the jobs are done; returns the Routed of each tick."""
    outs = []
    for _ in range(limit):
        if not proc.jobs:
            return outs
        outs.append(proc.tick(now))
    pytest.fail("fan-out never finished")


def test_audience_request_is_scattered_once_with_job_record_and_pull_entry():
    proc = PartitionProcessor(1, N)
    raw = audience_req()
    out = proc.process([(REQUEST, b"star", raw, 7)], NOW)
    assert sorted(p for k, p, key, v in out.reroute) == list(range(N))
    assert {(k, key, v) for k, p, key, v in out.reroute} == {(REQUEST, FANOUT_KEY, raw)}
    assert [(nid, rec["audience"], rec["partitions"]) for nid, rec in out.fanout_jobs] == [
        ("fan1", "followers:star", str(N))]
    [(aud, entry, score)] = out.pull
    assert (aud, score) == ("followers:star", NOW)
    assert orjson.loads(entry)["id"] == "fan1" and orjson.loads(entry)["title"] == "New post"
    assert proc.next_wake_ms() is None  # the scattering partition expands only its copy

    again = proc.process([(REQUEST, b"star", raw, 8)], NOW + 1)  # a producer's retry
    assert again.reroute == [] and again.pull == []
    assert [r.outcome for r in again.receipts] == ["duplicate"]


def test_hybrid_false_writes_no_pull_entry_and_critical_lane_rejects_audiences():
    out = PartitionProcessor(0, N).process([(REQUEST, b"s", audience_req(hybrid=False), 0)], NOW)
    assert out.pull == [] and len(out.reroute) == N
    crit = PartitionProcessor(0, N, lane="critical")
    out = crit.process([(REQUEST, b"s", audience_req(), 3)], NOW)
    assert out.reroute == []
    assert "fan-out runs on notify.requests only" in out.receipts[0].reason
    assert len(out.rejected) == 1


def test_scattered_copy_expands_local_members_in_chunks_hybrid_by_presence():
    p = 2
    proc = PartitionProcessor(p, N, fanout_chunk=4, presence_window_s=3600)
    members = users_in(p, 10)
    active = set(members[:3])
    records = [sub(u, "followers:star") for u in members]
    records += [sub(u, "topic:other") for u in users_in(p, 2, "x")]  # another audience
    records += [seen(u) for u in active]
    records.append(seen(members[5], NOW - 2 * 3600 * 1000))  # seen, but too long ago
    out = proc.process(records, NOW)
    assert sorted(u for u, t, ms in out.follows if t == "followers:star" and ms == NOW) == sorted(
        members)

    proc.process([(REQUEST, FANOUT_KEY, audience_req(), 0)], NOW)
    assert proc.next_wake_ms() == ASAP
    ticks = drain(proc)
    assert len(ticks) == 3  # 10 members, 4 a tick
    assert [t.progress[-1][2]["expanded"] for t in ticks] == [4, 8, 10]
    last = ticks[-1].progress[-1]
    assert last[:2] == ("fan1", p)
    assert last[2] == {"expanded": 10, "routed_now": 3, "deferred": 7, "done": 1}
    inapp = [t.user_id for tick in ticks for t in tick.inapp]
    assert sorted(inapp) == sorted(active)  # only the active ones are routed now
    # no device: push says no_target for each active member, nothing for the deferred ones
    assert sorted(r.user_id for tick in ticks for r in tick.receipts) == sorted(active)


def test_hybrid_false_routes_every_member_with_their_preferences():
    p = 0
    proc = PartitionProcessor(p, N, fanout_chunk=100)
    members = users_in(p, 5)
    recs = [sub(u, "topic:sports") for u in members]
    recs.append((SETTINGS, members[0].encode(),
                 orjson.dumps({"user_id": members[0], "opt_out_types": ["social"]}), 0))
    proc.process(recs, NOW)
    proc.process([(REQUEST, FANOUT_KEY, audience_req("topic", "sports", hybrid=False,
                                                     channels=["inapp"]), 0)], NOW)
    [tick] = drain(proc)
    assert sorted(t.user_id for t in tick.inapp) == sorted(members[1:])
    assert [(r.user_id, r.outcome) for r in tick.receipts] == [(members[0], "suppressed")]
    assert tick.progress[-1][2]["routed_now"] == 5


def test_repeated_scattered_copy_is_one_job_per_partition():
    proc = PartitionProcessor(0, N, fanout_chunk=100)
    proc.process([sub(u, "followers:star") for u in users_in(0, 3)], NOW)
    proc.process([(REQUEST, FANOUT_KEY, audience_req(hybrid=False), 0)] * 2, NOW)
    assert len(proc.jobs) == 1
    assert len(proc.dedup) == 1  # one dedup id for the job, none per recipient
    [tick] = drain(proc)
    assert len(tick.inapp) == 3


def test_job_with_no_local_members_reports_done():
    proc = PartitionProcessor(3, N)
    proc.process([(REQUEST, FANOUT_KEY, audience_req("topic", "nobody"), 0)], NOW)
    [tick] = drain(proc)
    assert tick.progress == [("fan1", 3, {"expanded": 0, "routed_now": 0, "deferred": 0,
                                          "done": 1})]


def test_snapshot_mid_job_resumes_where_it_stopped():
    p = 1
    proc = PartitionProcessor(p, N, fanout_chunk=3)
    members = users_in(p, 8)
    proc.process([sub(u, "followers:star") for u in members], NOW)
    proc.process([(REQUEST, FANOUT_KEY, audience_req(hybrid=False), 0)], NOW)
    first = proc.tick(NOW)
    snap = proc.snapshot()
    done_before = [t.user_id for t in first.inapp]

    again = PartitionProcessor(p, N, fanout_chunk=3)
    again.restore(snap)
    assert again.next_wake_ms() == ASAP
    rest = drain(again)
    after = [t.user_id for tick in rest for t in tick.inapp]
    assert sorted(done_before + after) == sorted(members)
    assert not set(done_before) & set(after)
    assert rest[-1].progress[-1][2] == {"expanded": 8, "routed_now": 8, "deferred": 0, "done": 1}
    # the index and presence came back too: the same copy again is a duplicate job
    again.process([(REQUEST, FANOUT_KEY, audience_req(hybrid=False), 0)], NOW)
    assert again.next_wake_ms() is None
    assert sorted(again.audiences.members_of("followers:star")) == sorted(members)


def test_subscription_tombstone_unsubscribes_and_bad_records_are_rejected():
    p = 0
    proc = PartitionProcessor(p, N)
    a, b = users_in(p, 2)
    out = proc.process([sub(a, "followers:star"), sub(b, "followers:star"),
                        (SUBSCRIPTIONS, f"{a}|followers:star".encode(), None, 0)], NOW)
    assert proc.audiences.members_of("followers:star") == [b]
    assert out.follows[-1] == (a, "followers:star", 0)
    bad = proc.process([
        (SUBSCRIPTIONS, b"k", orjson.dumps({"user_id": a, "target": "fans:star"}), 4),
        (SUBSCRIPTIONS, b"wrong-key", orjson.dumps({"user_id": a, "target": "topic:x"}), 5),
        (PRESENCE, b"k", orjson.dumps({"user_id": a, "seen_ms": -1}), 6),
    ], NOW)
    reasons = [orjson.loads(m)["reason"] for _k, m in bad.rejected]
    assert reasons[0].startswith("target: 'fans:star' is not")
    assert reasons[1].startswith("key: must be 'user_id|target'")
    assert reasons[2] == "seen_ms: must be epoch milliseconds > 0"
    assert [orjson.loads(m)["source"]["topic"] for _k, m in bad.rejected] == [
        "subscriptions", "subscriptions", "presence"]


def test_records_on_the_wrong_partition_are_rerouted_to_the_subscribers():
    proc = PartitionProcessor(0, N)
    [u] = users_in(3, 1)
    out = proc.process([sub(u, "topic:x"), seen(u),
                        (SUBSCRIPTIONS, f"{u}|topic:x".encode(), None, 0)], NOW)
    assert [(k, p) for k, p, _key, _v in out.reroute] == [(SUBSCRIPTIONS, 3), (PRESENCE, 3),
                                                          (SUBSCRIPTIONS, 3)]
    assert out.reroute[-1][3] is None  # the tombstone travels as a tombstone
    assert len(proc.audiences) == 0 and len(proc.presence) == 0


def test_all_audience_is_every_user_the_partition_knows():
    p = 2
    proc = PartitionProcessor(p, N, fanout_chunk=100)
    with_settings, subscriber = users_in(p, 2)
    proc.process([(SETTINGS, with_settings.encode(),
                   orjson.dumps({"user_id": with_settings}), 0),
                  sub(subscriber, "topic:news"), sub(subscriber, "followers:star")], NOW)
    proc.process([(REQUEST, FANOUT_KEY, audience_req("all", hybrid=False), 0)], NOW)
    [tick] = drain(proc)
    assert sorted(t.user_id for t in tick.inapp) == sorted([with_settings, subscriber])


def test_job_that_expires_stops_with_one_receipt():
    p = 1
    proc = PartitionProcessor(p, N, fanout_chunk=2)
    proc.process([sub(u, "followers:star") for u in users_in(p, 6)], NOW)
    proc.process([(REQUEST, FANOUT_KEY, audience_req(hybrid=False, expires_at=NOW + 1000), 0)],
                 NOW)
    proc.tick(NOW)
    late = proc.tick(NOW + 5000)
    assert late.inapp == []
    assert [(r.outcome, r.reason) for r in late.receipts] == [
        ("expired", f"expired with 4 audience members not expanded on partition {p}")]
    assert late.progress[-1][2] == {"expanded": 2, "routed_now": 2, "deferred": 0, "done": 1}
    assert proc.next_wake_ms() is None


def test_jobs_share_the_chunk_budget_oldest_first():
    jobs = FanoutJobs()
    from operators.fanout import FanoutJob

    jobs.add(FanoutJob("a", b"", ["1", "2", "3"], True))
    jobs.add(FanoutJob("b", b"", ["4", "5"], True))
    assert [(j.nid, users) for j, users in jobs.take(4, NOW)] == [("a", ["1", "2", "3"]),
                                                              ("b", ["4"])]
    assert [(j.nid, users) for j, users in jobs.take(4, NOW)] == [("b", ["5"])]
    assert not jobs


def test_index_presence_snapshots_and_sweep():
    idx = AudienceIndex()
    idx.add("u1", "topic:a")
    idx.add("u1", "topic:b")
    idx.add("u2", "topic:a")
    back = AudienceIndex.restore(idx.snapshot())
    assert sorted(back.members_of("topic:a")) == ["u1", "u2"]
    assert back.subscribed == {"u1": 2, "u2": 1}
    back.remove("u1", "topic:a")
    back.remove("u1", "topic:b")
    assert back.subscribed == {"u2": 1} and "topic:b" not in back.members
    pres = PresenceTable()
    pres.saw("u1", 10_000)
    pres.saw("u1", 5_000)  # older: ignored
    pres.saw("u2", 1_000)
    assert PresenceTable.restore(pres.snapshot()).seen == {"u1": 10, "u2": 1}
    assert pres.sweep(5) == 1 and pres.active_since("u1", 10)


def test_summarize_progress_sums_partitions():
    fields = {"audience": "followers:star", "partitions": "2", "type": "social.post",
              "hybrid": "1", "created_ms": "5",
              "0:expanded": "10", "0:routed_now": "3", "0:deferred": "7", "0:done": "1",
              "1:expanded": "4", "1:routed_now": "4", "1:deferred": "0", "1:done": "0"}
    s = summarize_progress(fields)
    assert (s["expanded"], s["routed_now"], s["deferred"]) == (14, 7, 7)
    assert (s["partitions"], s["partitions_done"], s["finished"]) == (2, 1, False)


def test_subscription_and_presence_schemas_name_the_problem():
    assert decode_subscription(b'{"user_id":"u1","target":"topic:x"}').target == "topic:x"
    for raw, reason in [
        (b'{"user_id":"","target":"topic:x"}', "user_id: must not be empty"),
        (b'{"user_id":"a|b","target":"topic:x"}', "user_id: 'a|b' is not a user id"),
        (b'{"user_id":"u","target":"topic:"}', "target: 'topic:' is not"),
        (b'{"user_id":"u"}', "target: required field is missing"),
    ]:
        with pytest.raises(ValidationFailed) as e:
            decode_subscription(raw)
        assert e.value.reason.startswith(reason)
    assert parse_subscription_key(b"u1|followers:u2") == ("u1", "followers:u2")
    with pytest.raises(ValidationFailed):
        parse_subscription_key(b"garbage")
    assert decode_presence(b'{"user_id":"u","seen_ms":5}').seen_ms == 5
    with pytest.raises(ValidationFailed):
        decode_presence(b'{"user_id":"u","seen_ms":5,"extra":1}')


def test_send_at_holds_the_whole_job_and_the_pull_entry_until_then():
    p = 0
    later = NOW + 60_000
    scatter = PartitionProcessor(p, N)
    out = scatter.process([(REQUEST, b"s", audience_req(send_at=later), 0)], NOW)
    assert out.pull[0][2] == later  # merged into inboxes from send_at on
    proc = PartitionProcessor(p, N, fanout_chunk=100)
    proc.process([sub(u, "followers:star") for u in users_in(p, 3)], NOW)
    proc.process([(REQUEST, FANOUT_KEY, audience_req(hybrid=False, send_at=later), 0)], NOW)
    assert proc.next_wake_ms() == later
    assert proc.tick(NOW + 1000).progress == []  # not yet
    snap = proc.snapshot()
    again = PartitionProcessor(p, N, fanout_chunk=100)
    again.restore(snap)
    assert again.next_wake_ms() == later
    [tick] = drain(again, now=later)
    assert len(tick.inapp) == 3


def test_members_in_quiet_hours_are_held_not_woken():
    p = 3
    proc = PartitionProcessor(p, N, fanout_chunk=100)
    asleep, awake = users_in(p, 2)
    proc.process([sub(asleep, "topic:t"), sub(awake, "topic:t"),
                  (SETTINGS, asleep.encode(), orjson.dumps({
                      "user_id": asleep,
                      "quiet_hours": {"start": "00:00", "end": "23:59", "tz": "UTC"}}), 0)], NOW)
    proc.process([(REQUEST, FANOUT_KEY, audience_req("topic", "t", hybrid=False), 0)], NOW)
    [tick] = drain(proc)
    assert [t.user_id for t in tick.inapp] == [awake]
    assert len(proc.hold) == 1  # released when their quiet hours end
