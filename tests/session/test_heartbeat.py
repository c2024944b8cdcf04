"""The gateway's heartbeat, over real WebSockets: pings keep coming while pongs do,
and only the silent session is dropped."""

from __future__ import annotations

import orjson
import trio

from tests.session.harness import start_gateway
from tests.support.ws import ws_client as open_websocket_url

INTERVAL_S = 0.2


async def test_answered_pings_keep_coming_and_a_silent_session_alone_is_dropped(
        nursery: trio.Nursery, tmp_path) -> None:
    server = await start_gateway(nursery, tmp_path, engineio={
        "ping_interval_s": INTERVAL_S, "ping_timeout_s": INTERVAL_S})
    url = f"{server.ws_base}/sockets/?EIO=4&transport=websocket"
    async with open_websocket_url(url) as talker, open_websocket_url(url) as silent:
        sids = []
        for ws in (talker, silent):
            opening = await ws.get_message()
            assert opening.startswith("0{")
            sids.append(orjson.loads(opening[1:])["sid"])
        pings = 0
        with trio.move_on_after(12 * INTERVAL_S):
            while True:
                assert await talker.get_message() == "2"
                pings += 1
                await talker.send_message("3")
        # The first ping comes within one interval, then one an interval after each
        # pong: about 11 in 12 intervals; fewer only when the machine is slow to answer.
        assert 6 <= pings <= 13, pings
        assert set(server.gateway.engines) == {sids[0]}  # the silent one timed out
