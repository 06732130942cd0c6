from __future__ import annotations

import orjson

from tests.conftest import Running, hit
from tocsin.receiver import Receiver


async def test_three_hits_arrive_as_one_json_array(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    await tocsin.create_integration(receiver.url, ca_certificate=ca_pem)
    await tocsin.report_hits([hit(path=f"/p{i}") for i in range(3)])
    assert await receiver.until(lambda r: r.count >= 1)
    body = orjson.loads(receiver.requests[0].body)
    assert [item["details"]["hit"]["path"] for item in body] == ["/p0", "/p1", "/p2"]
