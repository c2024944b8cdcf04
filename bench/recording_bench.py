"""The cost of recording: CPU per consenting participant, memory of a long recording.

Usage: .venv/bin/python bench/recording_bench.py [--participants 8] [--seconds 20]
                                                  [--minutes 30] [--skip-live] [--skip-long]

1. Live (`--participants`, `--seconds`): the daemon's `SessionRecorder` runs
   here under trio-asyncio, exactly as in a session room; a subprocess holds
   N real aiortc peers (plain asyncio) each sending a paced tone; signalling
   goes over the subprocess's stdio. Once every peer is connected, the CPU
   time of this process (all threads: aiortc decodes in the executor) is
   measured over `--seconds` and reported as a share of one core, in total
   and per participant, with the idle recorder's share (no peer) measured
   first and subtracted.
2. Long (`--minutes`): the `Mixer` alone, fed N synthetic voices for
   `--minutes` of audio as fast as it can; reports the resident memory after
   the first minute and at the end (bounded memory means they match), the
   largest jitter-buffer content, the file's size and the CPU per audio minute.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pratico_daemon.recording.mixer import Mixer  # noqa: E402
from pratico_daemon.recording.recorder import FinishedRecording, SessionRecorder  # noqa: E402

PEERS = ROOT / "bench" / "peers" / "recording_tones.py"


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


async def share(seconds: float) -> float:
    """This process's CPU over `seconds` of wall time, as a share of one core."""
    c0, t0 = cpu_s(), time.monotonic()
    await trio.sleep(seconds)
    return (cpu_s() - c0) / (time.monotonic() - t0)


class Lines:
    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.buffer = b""

    async def next(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = await self.stream.receive_some(1 << 16)
            if not chunk:
                raise EOFError("peers exited")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)  # type: ignore[no-any-return]


async def live(participants: int, seconds: float) -> dict[str, Any]:
    finished: list[FinishedRecording] = []
    with tempfile.TemporaryDirectory() as folder:
        recorder = SessionRecorder("bench", Path(folder), [], finished.append)
        recorder.consenting = {f"p{i}" for i in range(participants)}
        async with trio.open_nursery() as nursery:
            await nursery.start(recorder.run)
            idle = await share(3)
            process = await trio.lowlevel.open_process(
                [sys.executable, str(PEERS), str(participants)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert process.stdin is not None and process.stdout is not None
            lines = Lines(process.stdout)
            connected = 0
            with trio.fail_after(60):
                while connected < participants:
                    line = await lines.next()
                    if "offer" in line:
                        answer = await recorder.accept_offer(line["user"], line["offer"])
                        await process.stdin.send_all(json.dumps(
                            {"user": line["user"], "answer": answer}).encode() + b"\n")
                    elif line.get("connected"):
                        connected += 1
            await trio.sleep(2)
            busy = await share(seconds)
            rss = rss_mb()
            nursery.cancel_scope.cancel()
        await process.stdin.aclose()
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
    done = finished[0] if finished else None
    return {"participants": participants, "seconds": seconds,
            "idle_core_share": round(idle, 4), "core_share": round(busy, 4),
            "per_participant_core_share": round((busy - idle) / participants, 4),
            "rss_mb": round(rss, 1),
            "recorded_s": done.duration_s if done else 0.0,
            "captured": len(done.participants) if done else 0}


def long_recording(participants: int, minutes: float) -> dict[str, Any]:
    from tests.recording.audio import tone_frames

    voices = [tone_frames(300 + 100 * i, 1.0, amplitude=0.2) for i in range(participants)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "long.ogg"
        mixer = Mixer(path, start=0.0)
        frames = int(minutes * 60 * 50)
        c0 = cpu_s()
        after_first_minute = 0.0
        peak_buffered = 0
        for i in range(frames):
            now = (i + 1) * 0.02
            for n, voice in enumerate(voices):
                mixer.push(str(n), voice[i % len(voice)], now)
            mixer.advance(now)
            peak_buffered = max(peak_buffered, mixer.buffered_samples())
            if i == 60 * 50:
                after_first_minute = rss_mb()
        duration = mixer.close(frames * 0.02)
        cpu = cpu_s() - c0
        size = path.stat().st_size
    return {"participants": participants, "audio_minutes": minutes,
            "rss_mb_after_1_min": round(after_first_minute, 1),
            "rss_mb_at_end": round(rss_mb(), 1),
            "peak_buffered_s": round(peak_buffered / 48000, 2),
            "file_mb": round(size / 2**20, 2), "duration_s": round(duration, 1),
            "cpu_s_per_audio_minute": round(cpu / minutes, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--skip-live", action="store_true")
    parser.add_argument("--skip-long", action="store_true")
    args = parser.parse_args()
    if not args.skip_live:
        print(json.dumps({"live": trio.run(live, args.participants, args.seconds)}), flush=True)
    if not args.skip_long:
        print(json.dumps({"long": long_recording(args.participants, args.minutes)}), flush=True)


if __name__ == "__main__":
    main()
