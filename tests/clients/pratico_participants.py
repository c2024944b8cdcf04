"""N Pratico participants with python-socketio's AsyncClient (asyncio, so a subprocess).

    python pratico_participants.py URL ROOM_NAME COUNT NAME_PREFIX

Same behaviour as tests/js/pratico_participants.js: join by link name, follow
pages, answer the quiz (choice = index % 2, then a second answer that must be
refused), the first one chats after the close; a summary line per
participant at `session_ended`.
"""

import asyncio
import json
import sys

import socketio


def say(obj):
    print(json.dumps(obj), flush=True)


async def participant(url: str, room: str, i: int, prefix: str) -> None:
    client = socketio.AsyncClient(reconnection=False)
    ns = "/pratico"
    seen = {"name": f"{prefix}{i}", "pages": [], "chats": [], "leaked_correct": False,
            "answer": None, "closed": None, "scores": None, "ended": None, "joined": []}
    done = asyncio.get_running_loop().create_future()

    @client.on("page_changed", namespace=ns)
    async def page_changed(p, *offset):
        seen["pages"].append(p["page"])

    @client.on("participant_joined", namespace=ns)
    async def joined(p, *offset):
        seen["joined"].append(p["participant_id"])

    @client.on("chat_message", namespace=ns)
    async def chat(m, *offset):
        seen["chats"].append(m["text"])

    @client.on("scores_updated", namespace=ns)
    async def scores(s, *offset):
        seen["scores"] = s["scores"]

    @client.on("quiz_launched", namespace=ns)
    async def launched(quiz, *offset):
        seen["leaked_correct"] = any("correct" in q for q in quiz["questions"])
        q = quiz["questions"][0]
        seen["answer"] = await client.call("answer_quiz", {
            "quiz_id": quiz["quiz_id"], "question_id": q["id"], "choice": i % 2},
            namespace=ns, timeout=10)
        seen["second"] = await client.call("answer_quiz", {
            "quiz_id": quiz["quiz_id"], "question_id": q["id"], "choice": 0},
            namespace=ns, timeout=10)

    @client.on("quiz_closed", namespace=ns)
    async def closed(c, *offset):
        seen["closed"] = c
        if i == 0:
            seen["chat"] = await client.call("chat_send", {"text": f"hello from {prefix}"},
                                             namespace=ns, timeout=10)

    @client.on("session_ended", namespace=ns)
    async def ended(p, *offset):
        seen["ended"] = p

    @client.on("disconnect", namespace=ns)
    async def disconnected(*args):
        seen["disconnect"] = True
        if not done.done():
            done.set_result(None)

    transports = ["websocket"] if i % 2 == 0 else None
    await client.connect(url, namespaces=[ns], socketio_path="sockets", wait_timeout=10,
                         transports=transports)
    reply = await client.call("join", {"room": room, "display_name": seen["name"]},
                              namespace=ns, timeout=10)
    if reply["status"] != "SUCCESS":
        say({"fail": reply})
        sys.exit(1)
    seen["pid"] = reply["data"]["participant_id"]
    say({"joined": seen["pid"], "name": seen["name"], "transport": client.transport()})
    await asyncio.wait_for(done, 60)
    say({"summary": seen})
    await client.disconnect()


async def main(url: str, room: str, count: str, prefix: str) -> None:
    await asyncio.gather(*(participant(url, room, i, prefix) for i in range(int(count))))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
