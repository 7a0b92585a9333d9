"""Which source frames a compress keeps: a time range and a constant output rate, as ffmpeg's
-ss / -t / -frames and -r do.

Times are seconds from the first frame of the video. Without `fps`, every frame whose time lies in
[start, start + duration) is kept, up to `frames` of them. With `fps`, output frame k stands at time
start + k / fps and shows the source frame on screen then (frames are dropped or repeated), until the
range or the source ends. Times within a quarter of a source frame count as equal (SLACK). The audio track's packets are cut to the same range (packets are copied,
never re-encoded, so the cut falls on packet edges).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Iterator

SLACK = 0.25        # of a source frame interval: times closer than this count as equal (containers round
                    # timestamps: Matroska to the millisecond)


@dataclass(frozen=True)
class Timeline:
    start: float | None = None      # seconds from the first frame
    duration: float | None = None   # seconds
    frames: int | None = None       # at most this many output frames
    fps: Fraction | None = None     # a constant output rate

    @property
    def cuts(self) -> bool:
        """Whether a range is asked (the audio is then cut to it)."""
        return self.start is not None or self.duration is not None or self.frames is not None

    def rate(self, source_fps: Fraction) -> Fraction:
        return self.fps or source_fps

    def end(self, source_fps: Fraction) -> float:
        """Where the range ends, in seconds from the first frame (inf: the source's end)."""
        t0 = self.start or 0.0
        ends = [math.inf if self.duration is None else t0 + self.duration]
        if self.frames is not None:
            ends.append(t0 + self.frames / float(self.rate(source_fps)))
        return min(ends)

    def estimate(self, source_frames: int | None, source_fps: Fraction) -> int | None:
        """About how many frames select() yields, from the container's frame-count estimate (or None)."""
        t0 = self.start or 0.0
        length = min(self.end(source_fps), math.inf if source_frames is None else source_frames / float(source_fps)) - t0
        if math.isinf(length):
            return None
        n = max(0, math.ceil(length * float(self.rate(source_fps)) - SLACK))
        return n if self.frames is None else min(n, self.frames)

    def select(self, timed: Iterable[tuple[float, object]], source_fps: Fraction) -> Iterator:
        """timed: (seconds from the first frame, frame) in display order -> the frames kept, in order
        (the same frame again where the output rate repeats it)."""
        t0, end = self.start or 0.0, self.end(source_fps)
        limit = math.inf if self.frames is None else self.frames
        eps = SLACK / float(source_fps)
        n = 0
        if self.fps is None:
            for t, f in timed:
                if t >= end - eps or n >= limit:
                    return
                if t >= t0 - eps:
                    yield f
                    n += 1
            return
        step, k, shown, last = 1 / float(self.fps), 0, None, None
        for t, f in timed:
            while t0 + k * step < t - eps:            # output frames due before this one appears
                if t0 + k * step >= end - eps or n >= limit:
                    return
                if shown is not None:
                    yield shown
                    n += 1
                k += 1
            shown, last = f, t
        if shown is None:
            return
        stop = min(end, last + 1 / float(source_fps))   # the last frame stays on screen one source frame
        while t0 + k * step < stop - eps and n < limit:
            yield shown
            n += 1
            k += 1

    def audio(self, packets: Iterable[tuple], time_base: Fraction, origin: float, source_fps: Fraction) -> Iterator[tuple]:
        """The audio packets (pts, dts, duration, keyframe, data) that start inside the range, moved so
        that the range starts at 0. origin: the first video frame's time in the file (seconds)."""
        if not self.cuts:
            yield from packets
            return
        first = origin + (self.start or 0.0)
        last = origin + self.end(source_fps)
        shift = round(first / time_base)
        eps = SLACK / float(source_fps)
        for pts, dts, duration, key, data in packets:
            t = pts * time_base
            if t < first - eps:
                continue
            if t >= last - eps:
                return
            yield pts - shift, dts - shift, duration, key, data
