"""The mixer: several participants' audio frames in, one Opus/Ogg file out, bounded memory.

Theory of operation
-------------------
The mix has one timeline, counted in samples of the output rate (48 kHz,
mono: what Opus is built for and what speech needs) from the instant the
recording started. Each participant's frames are first converted to that rate
and layout by their own `av.AudioResampler` (aiortc hands out s16 stereo at
48 kHz, a test may send anything), then *placed* on the timeline:

- by arrival time: the first frame of a participant lands where it arrived
  (a participant who joins late contributes silence before), and so does any
  frame that arrives more than `resync_s` later than the stream so far
  predicts (the sender paused, or the network dropped a stretch: the gap is
  silence instead of shifting everything after it);
- otherwise contiguously after the previous frame: network jitter of a few
  tens of milliseconds must not chop a continuous voice into pieces.

Frames wait in a small per-participant jitter buffer (chunks of samples with
their timeline position). `advance(now)` mixes everything up to
`now - latency_s`: the sum of whatever each participant has there (nothing
means silence), passed through a limiter (a gain that drops at once to keep
the peak below full scale and recovers slowly, so that three people talking
at once never wrap around or clip hard), encoded by libopus in 20 ms frames
and written to the Ogg file as it goes. A frame that arrives behind the mix
cursor is trimmed (its late part is lost, as in any live mix), and one that
would land more than `max_ahead_s` in front is dropped; so memory per
participant is bounded by `latency_s + max_ahead_s` of audio whatever the
recording's length, and the encoder streams to disk.

`remove(participant, at)` stops capturing a participant from `at` (consent
withdrawn, or they left): what they said before `at` is still mixed when the
cursor reaches it; nothing of theirs from `at` on ever is.

The mixer is synchronous and takes times as arguments (seconds on any
monotonic clock): the recorder feeds it from trio, the tests feed it
synthetic frames with synthetic times.
"""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

RATE = 48_000
FRAME = 960  # 20 ms at 48 kHz: the Opus frame size we encode
CONTENT_TYPE = "audio/ogg"
_TIME_BASE = Fraction(1, RATE)


class _Voice:
    """One participant's place on the timeline and its jitter buffer."""

    __slots__ = ("chunks", "next_pos", "resampler", "stop_at")

    def __init__(self) -> None:
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        self.next_pos: int | None = None
        self.chunks: list[tuple[int, np.ndarray]] = []
        self.stop_at: int | None = None

    def buffered(self) -> int:
        return sum(len(c) for _, c in self.chunks)


class Mixer:
    """Mixes participants' `av.AudioFrame`s into an Opus/Ogg file at `path`; see the module doc."""

    def __init__(self, path: Path, start: float, *, latency_s: float = 0.3,
                 max_ahead_s: float = 1.0, resync_s: float = 0.25,
                 bitrate: int = 32_000) -> None:
        self.path = path
        self.start = start
        self.latency = int(latency_s * RATE)
        self.max_ahead = int(max_ahead_s * RATE)
        self.resync = int(resync_s * RATE)
        self.voices: dict[str, _Voice] = {}
        self.stopped: set[str] = set()
        self.cursor = 0  # samples mixed and handed to the encoder so far
        self.gain = 1.0
        self.dropped_samples = 0
        self.closed = False
        path.parent.mkdir(parents=True, exist_ok=True)
        self._container: Any = av.open(str(path), "w", format="ogg")
        # Constrained VBR: the size stays near `bitrate` whatever the content
        # (unconstrained, libopus spent ~50 kb/s on steady tones), so an hour is
        # a predictable ~15 MB.
        stream = self._container.add_stream("libopus", rate=RATE,
                                            options={"vbr": "constrained"})
        stream.layout = "mono"
        stream.bit_rate = bitrate
        self._stream: Any = stream
        self._pending = np.zeros(0, dtype=np.float32)  # < FRAME samples not yet encoded

    def __repr__(self) -> str:
        return f"<Mixer {self.path.name} {len(self.voices)} voices {self.duration:.1f}s>"

    @property
    def duration(self) -> float:
        """Seconds of audio mixed so far (the file's duration once closed)."""
        return self.cursor / RATE

    def buffered_samples(self) -> int:
        """Samples waiting in jitter buffers (bounded; the memory test watches it)."""
        return sum(v.buffered() for v in self.voices.values()) + len(self._pending)

    def _pos(self, when: float) -> int:
        return max(0, round((when - self.start) * RATE))

    # -- input ----------------------------------------------------------------------------

    def push(self, participant: str, frame: av.AudioFrame, arrival: float) -> None:
        """A frame of `participant`'s audio arrived at `arrival` (seconds, monotonic)."""
        if self.closed:
            return
        if participant in self.stopped:
            return
        voice = self.voices.get(participant)
        if voice is None:
            voice = self.voices[participant] = _Voice()
        if voice.stop_at is not None:
            return
        samples = [f.to_ndarray().reshape(-1) for f in voice.resampler.resample(frame)]
        if not samples:
            return
        data = np.concatenate(samples) if len(samples) > 1 else samples[0]
        data = data.astype(np.float32, copy=False)
        # The last sample arrived at `arrival`: the frame started len(data) before.
        arrived_at = self._pos(arrival) - len(data)
        if voice.next_pos is None or arrived_at - voice.next_pos > self.resync:
            voice.next_pos = max(arrived_at, 0)
        elif voice.next_pos - arrived_at > self.max_ahead:
            # Faster than real time (or a clock jump): keeping it would grow the
            # buffer without bound; real time is what a live mix can honour.
            self.dropped_samples += len(data)
            return
        pos = voice.next_pos
        voice.next_pos = pos + len(data)
        if pos + len(data) <= self.cursor:
            self.dropped_samples += len(data)
            return
        if pos < self.cursor:
            data = data[self.cursor - pos:]
            self.dropped_samples += self.cursor - pos
            pos = self.cursor
        if pos + len(data) > self.cursor + self.latency + self.max_ahead:
            self.dropped_samples += len(data)
            return
        voice.chunks.append((pos, data))

    def remove(self, participant: str, at: float) -> None:
        """Capture nothing of `participant` from `at` on (consent withdrawn, left).

        Frames pushed for them afterwards are ignored until `admit` (consent given
        again, through a new connection).
        """
        self.stopped.add(participant)
        voice = self.voices.get(participant)
        if voice is None:
            return
        stop = max(self._pos(at), self.cursor)
        voice.stop_at = stop
        kept = []
        for pos, data in voice.chunks:
            if pos < stop:
                kept.append((pos, data[:stop - pos]))
        voice.chunks = kept

    def admit(self, participant: str) -> None:
        """Accept `participant`'s frames again after a `remove` (new consent)."""
        self.stopped.discard(participant)
        voice = self.voices.get(participant)
        if voice is not None and voice.stop_at is not None:
            voice.stop_at = None
            voice.next_pos = None

    # -- output ---------------------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Mix and encode everything up to `now - latency` (call every ~20 ms)."""
        self._mix_until(self._pos(now) - self.latency)

    def close(self, now: float) -> float:
        """Mix up to `now` (every buffer drained), finish the file; return its duration."""
        if self.closed:
            return self.duration
        try:
            self._mix_until(self._pos(now))
            if len(self._pending):
                pad = np.zeros(FRAME - len(self._pending), dtype=np.float32)
                self._encode(np.concatenate([self._pending, pad]), self.cursor - len(
                    self._pending))
                self._pending = np.zeros(0, dtype=np.float32)
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self.closed = True
            self.voices.clear()
            self._container.close()
        return self.duration

    def abort(self) -> None:
        """Close the file without flushing (the recording is being thrown away)."""
        if not self.closed:
            self.closed = True
            self.voices.clear()
            try:
                self._container.close()
            except Exception:  # best effort: the file is deleted next
                pass

    def _mix_until(self, end: int) -> None:
        # In blocks of at most one second: bounded temporary arrays even when a
        # long stall is caught up at once.
        while end > self.cursor:
            stop = min(end, self.cursor + RATE)
            self._mix_block(self.cursor, stop)

    def _mix_block(self, begin: int, end: int) -> None:
        out = np.zeros(end - begin, dtype=np.float32)
        for name, voice in list(self.voices.items()):
            kept = []
            for pos, data in voice.chunks:
                a, b = max(pos, begin), min(pos + len(data), end)
                if a < b:
                    out[a - begin:b - begin] += data[a - pos:b - pos]
                if pos + len(data) > end:
                    kept.append((pos, data) if pos >= end else (end, data[end - pos:]))
            voice.chunks = kept
            if voice.stop_at is not None and not kept:
                del self.voices[name]
        self._limit(out)
        self.cursor = end
        block = np.concatenate([self._pending, out]) if len(self._pending) else out
        first = end - len(block)
        whole = len(block) - len(block) % FRAME
        for offset in range(0, whole, FRAME):
            self._encode(block[offset:offset + FRAME], first + offset)
        self._pending = block[whole:].copy()

    def _limit(self, out: np.ndarray) -> None:
        """Keep the sum below full scale: instant attack, ~0.5 s release."""
        peak = float(np.max(np.abs(out))) if len(out) else 0.0
        target = 1.0 if peak <= 0.98 else 0.98 / peak
        if target < self.gain:
            self.gain = target
        else:
            self.gain = min(target, self.gain + len(out) / (RATE * 0.5))
        if self.gain < 1.0:
            out *= self.gain
        np.clip(out, -1.0, 1.0, out=out)

    def _encode(self, samples: np.ndarray, pts: int) -> None:
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = RATE
        frame.time_base = _TIME_BASE
        frame.pts = pts
        for packet in self._stream.encode(frame):
            self._container.mux(packet)


def concatenate(paths: list[Path], out: Path, *, bitrate: int = 32_000) -> float:
    """Join recordings one after the other into `out` (Opus/Ogg); return its duration.

    Used when a daemon restart split a session's recording into parts. The
    parts are decoded and encoded again as a stream (a few seconds of CPU per
    hour, memory bounded by one decoded frame): a plain remux would have to
    reconcile each part's Opus pre-skip and granule positions. Blocking: run it
    in a worker thread.
    """
    container: Any = av.open(str(out), "w", format="ogg")
    try:
        stream = container.add_stream("libopus", rate=RATE, options={"vbr": "constrained"})
        stream.layout = "mono"
        stream.bit_rate = bitrate
        written = 0
        pending = np.zeros(0, dtype=np.float32)

        def encode(samples: np.ndarray) -> None:
            nonlocal written
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt",
                                               layout="mono")
            frame.sample_rate = RATE
            frame.time_base = _TIME_BASE
            frame.pts = written
            written += len(samples)
            for packet in stream.encode(frame):
                container.mux(packet)

        for path in paths:
            source: Any = av.open(str(path))
            try:
                resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
                # chain(…, [None]): frames one at a time, then the resampler's flush.
                for frame in itertools.chain(source.decode(audio=0), [None]):
                    for chunk in resampler.resample(frame):
                        pending = np.concatenate([pending, chunk.to_ndarray().reshape(-1)])
                        whole = len(pending) - len(pending) % FRAME
                        for offset in range(0, whole, FRAME):
                            encode(pending[offset:offset + FRAME])
                        pending = pending[whole:].copy()
            finally:
                source.close()
        if len(pending):
            encode(np.concatenate([pending, np.zeros(FRAME - len(pending), np.float32)]))
        for packet in stream.encode(None):
            container.mux(packet)
    finally:
        container.close()
    return written / RATE
