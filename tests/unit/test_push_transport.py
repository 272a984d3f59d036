"""Push transport choice and the thread guard (no network)."""

import threading

import pytest

from notiflow.config import Settings
from sinks.push_transport import CurlTransport, HttpxTransport, make_transport, parse_headers


@pytest.mark.parametrize(("name", "cls"), [("curl", CurlTransport), ("httpx", HttpxTransport)])
def test_push_transport_chosen_by_settings(name, cls):
    t = make_transport(Settings(push_transport=name))
    try:
        assert isinstance(t, cls)
    finally:
        t.close()


def test_push_transport_unknown_name_is_an_error():
    with pytest.raises(ValueError, match="push_transport"):
        make_transport(Settings(push_transport="carrier-pigeon"))


def test_push_transport_refuses_a_second_thread():
    t = CurlTransport()
    try:
        assert t.send([]) == []
        err: list[BaseException] = []

        def other() -> None:
            try:
                t.send([])
            except RuntimeError as e:
                err.append(e)

        th = threading.Thread(target=other)
        th.start()
        th.join()
        assert err and "two threads" in str(err[0])
    finally:
        t.close()


def test_push_transport_parse_headers_keeps_apns_id_and_retry_after():
    raw = (b"HTTP/2 503 \r\ncontent-type: application/json\r\nApns-Id: 1-2-3\r\n"
           b"Retry-After: 7\r\nx-retry-after: 99\r\n\r\n")
    assert parse_headers(raw) == {"apns-id": "1-2-3", "retry-after": "7"}
    assert parse_headers(b"HTTP/2 200 \r\n\r\n") == {}
