"""The deliver step's parts without Bytewax or a network: markers as answers arrive, the
step's in-flight state, and a transport reporting each answer when it comes."""

from __future__ import annotations

from dataflows.adapters import DeliverLogic
from schemas.task import DeliveryTask, decode_task
from sinks.delivery import MARK_EVERY, Job, MarkerWriter
from sinks.push_transport import HttpReq, HttpResp, send_checked
from sinks.results import SendResult


def task(i: int, user: str = "u1") -> DeliveryTask:
    return DeliveryTask(notification_id=f"n{i}", user_id=user, type="t.x", priority="normal",
                        channel="push", provider="apns", target_id="phone",
                        address=f"{i:064x}", title="t", body="b", template=None, data=None,
                        collapse_key=None, created_ms=1_700_000_000_000)


class FakeMarkers:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def mark(self, tasks: list[DeliveryTask]) -> None:
        self.calls.append([t.notification_id for t in tasks])


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_markers_are_written_in_small_groups_as_answers_arrive_not_after_the_batch():
    m, clock = FakeMarkers(), Clock()
    w = MarkerWriter(m, clock)  # type: ignore[arg-type]
    for i in range(MARK_EVERY * 3 + 5):
        w.answer(SendResult(task(i), "sent"))
    # three full groups went out while the "batch" was still answering
    assert [len(c) for c in m.calls] == [MARK_EVERY] * 3
    w.flush()
    assert [len(c) for c in m.calls] == [MARK_EVERY] * 3 + [5]
    assert sum(m.calls, []) == [f"n{i}" for i in range(MARK_EVERY * 3 + 5)]


def test_a_slow_trickle_of_answers_is_marked_by_age_and_only_sent_answers_are_marked():
    m, clock = FakeMarkers(), Clock()
    w = MarkerWriter(m, clock)  # type: ignore[arg-type]
    w.answer(SendResult(task(1), "sent"))
    w.answer(SendResult(task(2), "retry", "apns 503"))
    w.answer(SendResult(task(3), "failed", "apns 400"))
    assert m.calls == []
    clock.t += 1.0
    w.answer(SendResult(task(4), "sent"))
    assert m.calls == [["n1", "n4"]]


class FakeBackground:
    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def submit(self, job: Job) -> None:
        self.jobs.append(job)


def test_the_deliver_step_keeps_what_is_in_flight_in_its_snapshot_until_done():
    bg = FakeBackground()
    step = DeliverLogic(bg, None)  # type: ignore[arg-type]
    out, retain = step.on_batch([[task(1), task(2)], [task(3)]])
    assert out == [] and retain is DeliverLogic.RETAIN
    assert [len(j.tasks) for j in bg.jobs] == [2, 1]
    assert [decode_task(b).notification_id for b in step.snapshot()] == ["n1", "n2", "n3"]
    assert step.notify_at() is not None  # it looks again to notice the work is done
    bg.jobs[0].done = True
    assert [decode_task(b).notification_id for b in step.snapshot()] == ["n3"]
    assert step.on_notify()[1] is DeliverLogic.RETAIN
    bg.jobs[1].done = True
    assert step.snapshot() == []
    assert step.on_notify()[1] is DeliverLogic.DISCARD  # nothing in flight: no state
    assert step.notify_at() is None


def test_a_restarted_deliver_step_hands_its_snapshot_over_again():
    bg = FakeBackground()
    first = DeliverLogic(bg, None)  # type: ignore[arg-type]
    first.on_batch([[task(1), task(2)]])
    snap = first.snapshot()
    bg2 = FakeBackground()
    again = DeliverLogic(bg2, snap)  # type: ignore[arg-type]
    assert [t.notification_id for j in bg2.jobs for t in j.tasks] == ["n1", "n2"]
    assert again.snapshot() == snap


class StreamingTransport:
    """Answers in reverse order, reporting each one before the call returns."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def send(self, reqs: list[HttpReq], on_answer=None) -> list[HttpResp]:
        out = [HttpResp(200) for _ in reqs]
        for k in reversed(range(len(reqs))):
            self.log.append(f"answer {k}")
            if on_answer is not None:
                on_answer(k, out[k])
        self.log.append("returned")
        return out


def test_send_checked_reports_each_answer_as_it_arrives_and_never_reports_unsent_ones():
    tr = StreamingTransport()
    seen: list[str] = []

    def on_result(r: SendResult) -> None:
        seen.append(r.task.notification_id)
        tr.log.append(f"result {r.task.notification_id}")

    tasks = [task(0), task(1), task(2)]
    results = send_checked(
        tr, tasks, lambda t: HttpReq(f"http://x/{t.notification_id}", [], b"{}"),
        lambda t, resp: SendResult(t, "sent" if resp.status == 200 else "retry"),
        lambda t, req: "refused" if t.notification_id == "n1" else None, on_result)
    assert [r.status for r in results] == ["sent", "failed", "sent"]
    assert seen == ["n2", "n0"]  # in answer order; n1 was never sent
    assert tr.log.index("result n2") < tr.log.index("returned")
