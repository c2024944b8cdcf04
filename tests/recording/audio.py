"""Test helpers: synthetic tone frames, decoding a recording, looking at its spectrum."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

RATE = 48_000


def tone_frames(freq: float, seconds: float, *, rate: int = RATE, samples: int = 960,
                amplitude: float = 0.3, layout: str = "stereo") -> list[av.AudioFrame]:
    """`seconds` of a sine at `freq` as s16 frames, as aiortc's decoder hands them out."""
    frames = []
    channels = 2 if layout == "stereo" else 1
    total = int(seconds * rate)
    for start in range(0, total - samples + 1, samples):
        t = (np.arange(start, start + samples) / rate).astype(np.float64)
        mono = (amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
        packed = np.repeat(mono, channels).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(packed, format="s16", layout=layout)
        frame.sample_rate = rate
        frame.time_base = Fraction(1, rate)
        frame.pts = start
        frames.append(frame)
    return frames


def decode(source: Path | bytes) -> np.ndarray:
    """The whole file as float32 mono at 48 kHz."""
    import io

    handle = av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source))
    try:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        parts = []
        for frame in handle.decode(audio=0):
            parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    finally:
        handle.close()
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def tone_levels(samples: np.ndarray, freqs: list[float], *, rate: int = RATE) -> dict[float, float]:
    """Each frequency's share of the segment's spectral magnitude peak (1.0 = the peak).

    A Hann window and ±3 bins around each frequency absorb Opus's small shifts.
    """
    if len(samples) < rate // 10:
        return {f: 0.0 for f in freqs}
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    bins = np.fft.rfftfreq(len(samples), 1 / rate)
    peak = float(spectrum.max()) or 1.0
    levels = {}
    for f in freqs:
        near = np.abs(bins - f) <= 3 * rate / len(samples) + 2
        levels[f] = float(spectrum[near].max()) / peak
    return levels


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
