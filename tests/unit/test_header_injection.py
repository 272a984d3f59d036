"""No request field can add headers to a provider request signed with our credentials.

``collapse_key`` becomes APNs' ``apns-collapse-id`` header: a CR/LF in it used to pass the
contracts (checked by length only) and libcurl sent ``x\\r\\napns-push-type: voip`` as extra
headers.  The contracts now refuse control characters in it and in the dedup parts, and
both push transports refuse CR/LF/NUL in any header or URL: that one request fails with a
reason, the rest of its batch is sent.
"""

from __future__ import annotations

import socket
import threading

import h2.config
import h2.connection
import h2.events
import msgspec
import orjson
import pytest

from notiflow.config import Settings
from operators.retry_gate import envelope_or_rejected
from schemas.errors import ValidationFailed
from schemas.request import decode_request
from schemas.retry import RetryEnvelope, encode_envelope
from schemas.task import DeliveryTask
from sinks import apns, fcm
from sinks.push_transport import CurlTransport, HttpReq, HttpResp, HttpxTransport

EVIL = "x\r\napns-push-type: voip\r\nx-evil: 1"
NOW = 1_764_050_000_000


def request(**extra) -> bytes:
    return orjson.dumps({"id": "n1", "type": "social.like", "created_at": NOW,
                         "recipients": ["u1"], "body": "b", **extra})


@pytest.mark.parametrize("fields", [
    {"collapse_key": EVIL}, {"collapse_key": "a\nb"}, {"collapse_key": "a\x00"},
    {"dedup": {"actor": EVIL}}, {"dedup": {"object": "photo\r\n9"}},
])
def test_contract_refuses_control_characters_in_header_and_dedup_fields(fields):
    field = next(iter(fields))
    with pytest.raises(ValidationFailed, match=f"^{field}.*control characters"):
        decode_request(request(**fields))


def test_contract_still_takes_ordinary_collapse_keys_and_dedup_parts():
    req = decode_request(request(collapse_key="like:photo9", dedup={"actor": "u 7", "object": ""}))
    assert req.collapse_key == "like:photo9"


def task(collapse_key: str | None, nid: str = "n1") -> DeliveryTask:
    return DeliveryTask(notification_id=nid, user_id="u1", type="social.like",
                        priority="normal", channel="push", provider="apns", target_id="d1",
                        address="ab" * 32, title=None, body="b", template=None, data=None,
                        collapse_key=collapse_key, created_ms=NOW)


class Msg:
    def __init__(self, value: bytes) -> None:
        self.value, self.key, self.partition, self.offset = value, b"u1", 0, 1


def test_a_retry_envelope_with_a_crlf_collapse_key_is_rejected():
    got = envelope_or_rejected(Msg(encode_envelope(RetryEnvelope(task(EVIL), NOW, NOW))))
    assert not isinstance(got, RetryEnvelope)
    assert "task.collapse_key" in orjson.loads(got[1])["reason"]


class Recording:
    """A transport that records what it was asked to send and answers 200."""

    def __init__(self) -> None:
        self.sent: list[HttpReq] = []

    def send(self, reqs: list[HttpReq]) -> list[HttpResp]:
        self.sent.extend(reqs)
        return [HttpResp(200, {"apns-id": "x"}, b"{}") for _ in reqs]

    def close(self) -> None: ...


def test_apns_send_fails_the_unsafe_task_alone_before_the_network():
    """A task that skipped the contracts (made in process): refused with a reason, the rest
    of the batch sent."""
    tr = Recording()
    tasks = [task("ok", "n1"), task(EVIL, "n2"), task(None, "n3")]
    results = apns.send(tr, tasks, Settings())
    assert [r.status for r in results] == ["sent", "failed", "sent"]
    assert "apns-collapse-id" in results[1].reason and "CR, LF or NUL" in results[1].reason
    assert len(tr.sent) == 2
    assert all(c not in k + v for r in tr.sent for k, v in r.headers for c in "\r\n\x00")


def test_fcm_send_refuses_a_header_from_a_bad_setting():
    tr = Recording()
    t = msgspec.structs.replace(task("ok"), provider="fcm")
    [r] = fcm.send(tr, [t], Settings(fcm_access_token="tok\r\nx-evil: 1"))
    assert r.status == "failed" and "authorization" in r.reason and tr.sent == []


class H2Server:
    """A cleartext HTTP/2 server (h2) recording every request's headers; answers 200."""

    def __init__(self) -> None:
        self.requests: list[dict[bytes, list[bytes]]] = []
        self._srv = socket.socket()
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(4)
        self.url = f"http://127.0.0.1:{self._srv.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                s, _ = self._srv.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(s,), daemon=True).start()

    def _conn(self, s: socket.socket) -> None:
        c = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, validate_inbound_headers=False))
        c.initiate_connection()
        s.sendall(c.data_to_send())
        while data := s.recv(65535):
            for ev in c.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    hs: dict[bytes, list[bytes]] = {}
                    for k, v in ev.headers:
                        hs.setdefault(bytes(k), []).append(bytes(v))
                    self.requests.append(hs)
                elif isinstance(ev, h2.events.StreamEnded):
                    c.send_headers(ev.stream_id, [(":status", "200")], end_stream=True)
            s.sendall(c.data_to_send())

    def close(self) -> None:
        self._srv.close()


@pytest.fixture
def server():
    srv = H2Server()
    try:
        yield srv
    finally:
        srv.close()


@pytest.mark.parametrize("transport", [CurlTransport, HttpxTransport])
def test_transports_never_send_a_header_with_crlf(server, transport):
    cfg = Settings(apns_url=server.url)
    reqs = [apns.build_request(task(c, f"n{i}"), cfg) for i, c in enumerate(["a", EVIL, "b"])]
    tr = transport(5.0)
    try:
        resps = tr.send(reqs)
    finally:
        tr.close()
    assert [r.status for r in resps] == [200, 0, 200]
    assert resps[1].error and "CR, LF or NUL" in resps[1].error
    assert len(server.requests) == 2
    for hs in server.requests:
        assert b"x-evil" not in hs and hs[b"apns-push-type"] == [b"alert"]
    assert sorted(v for hs in server.requests for v in hs[b"apns-collapse-id"]) == [b"a", b"b"]
