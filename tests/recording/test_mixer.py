"""The mixer on synthetic frames: tones in, an Opus/Ogg file out, checked by its spectrum."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from pratico_daemon.recording.mixer import RATE, Mixer
from tests.recording.audio import decode, tone_frames, tone_levels

TONES = [440.0, 660.0, 880.0]


def feed(mixer: Mixer, schedule: list[tuple[float, str, object]], *, step: float = 0.02) -> None:
    """Push frames at their (jittered) arrival times, advancing the mix every `step`."""
    schedule.sort(key=lambda item: item[0])
    now = mixer.start
    for arrival, who, frame in schedule:
        while now + step <= arrival:
            now += step
            mixer.advance(now)
        mixer.push(who, frame, arrival)  # type: ignore[arg-type]


def frames_at(who: str, freq: float, start: float, seconds: float, *, jitter: float = 0.0,
              seed: int = 1, amplitude: float = 0.3) -> list[tuple[float, str, object]]:
    rng = random.Random(seed)
    out = []
    for i, frame in enumerate(tone_frames(freq, seconds, amplitude=amplitude)):
        arrival = start + (i + 1) * 0.02 + rng.uniform(0, jitter)
        out.append((arrival, who, frame))
    return out


def test_two_voices_one_joining_late_are_mixed_with_the_right_timing(tmp_path: Path) -> None:
    path = tmp_path / "recordings" / "s.ogg"
    mixer = Mixer(path, start=100.0)
    schedule = frames_at("a", 440, 100.0, 6.0, jitter=0.03) + \
        frames_at("b", 660, 102.0, 4.0, jitter=0.03, seed=2)
    feed(mixer, schedule)
    duration = mixer.close(106.0)
    assert abs(duration - 6.0) < 0.1
    audio = decode(path)
    assert abs(len(audio) / RATE - 6.0) <= 0.6
    first = tone_levels(audio[int(0.3 * RATE):int(1.7 * RATE)], TONES)
    both = tone_levels(audio[int(2.5 * RATE):int(5.5 * RATE)], TONES)
    assert first[440] > 0.5 and first[660] < 0.05, first
    assert both[440] > 0.5 and both[660] > 0.5 and both[880] < 0.05, both
    assert mixer.buffered_samples() == 0


def test_a_removed_voice_stops_at_that_moment(tmp_path: Path) -> None:
    path = tmp_path / "s.ogg"
    mixer = Mixer(path, start=0.0)
    schedule = frames_at("a", 440, 0.0, 6.0) + frames_at("b", 880, 0.0, 6.0)
    schedule.sort(key=lambda item: item[0])
    now = 0.0
    removed = False
    for arrival, who, frame in schedule:
        while now + 0.02 <= arrival:
            now += 0.02
            mixer.advance(now)
        if not removed and arrival >= 3.0:
            mixer.remove("b", 3.0)
            removed = True
        mixer.push(who, frame, arrival)  # type: ignore[arg-type]
    mixer.close(6.0)
    audio = decode(path)
    before = tone_levels(audio[int(0.5 * RATE):int(2.8 * RATE)], TONES)
    after = tone_levels(audio[int(3.2 * RATE):int(5.8 * RATE)], TONES)
    assert before[440] > 0.5 and before[880] > 0.5, before
    assert after[440] > 0.5 and after[880] < 0.05, after


def test_three_loud_voices_are_limited_not_wrapped(tmp_path: Path) -> None:
    path = tmp_path / "s.ogg"
    mixer = Mixer(path, start=0.0)
    schedule = []
    for n, freq in enumerate(TONES):  # full-scale tones: their sum would reach ~3x
        schedule += frames_at(str(n), freq, 0.0, 3.0, amplitude=0.95)
    feed(mixer, schedule)
    mixer.close(3.0)
    audio = decode(path)
    assert float(np.max(np.abs(audio))) <= 1.05
    levels = tone_levels(audio[int(0.5 * RATE):int(2.5 * RATE)], TONES)
    assert min(levels.values()) > 0.4, levels


def test_memory_stays_bounded_and_late_or_far_frames_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "long.ogg"
    mixer = Mixer(path, start=0.0, latency_s=0.3, max_ahead_s=1.0)
    frames = tone_frames(440, 0.02 * 50)  # one second of frames, reused
    bound = int((0.3 + 1.0 + 0.1) * RATE) * 2
    now = 0.0
    peak = 0
    for i in range(60 * 50):  # a minute of two voices
        now = (i + 1) * 0.02
        mixer.push("a", frames[i % 50], now)
        mixer.push("b", frames[(i + 7) % 50], now)
        mixer.advance(now)
        peak = max(peak, mixer.buffered_samples())
    assert peak <= bound
    # A burst of frames far ahead of real time (a sender gone mad) is dropped.
    for frame in frames * 3:
        mixer.push("a", frame, now)
    assert mixer.buffered_samples() <= bound
    assert mixer.dropped_samples > 0
    assert abs(mixer.close(now) - 60.0) < 0.1
    assert abs(len(decode(path)) / RATE - 60.0) < 1.0


def test_parts_are_joined_in_order(tmp_path: Path) -> None:
    from pratico_daemon.recording.mixer import concatenate

    paths = []
    for n, freq in enumerate((440, 660)):
        mixer = Mixer(tmp_path / f"part{n}.ogg", start=0.0)
        feed(mixer, frames_at("a", freq, 0.0, 2.0))
        mixer.close(2.0)
        paths.append(mixer.path)
    duration = concatenate(paths, tmp_path / "joined.ogg")
    audio = decode(tmp_path / "joined.ogg")
    assert abs(duration - 4.0) < 0.15
    assert abs(len(audio) / RATE - duration) < 0.1
    first = tone_levels(audio[int(0.3 * RATE):int(1.7 * RATE)], TONES)
    second = tone_levels(audio[int(2.3 * RATE):int(3.7 * RATE)], TONES)
    assert first[440] > 0.5 and first[660] < 0.05, first
    assert second[660] > 0.5 and second[440] < 0.05, second
