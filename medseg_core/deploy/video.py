"""Video / camera pipeline: decoding, inference and drawing + writing overlap in three threads.

::

    reader thread            main thread (inference)         writer thread
    frames -> queue(in) ->   predictor(frame) -> queue(out) -> render(frame, pred) -> sink(...)

Bounded FIFO queues between one producer and one consumer each keep the frames in order and
bound memory (``queue_size`` frames in flight per queue). OpenCV decoding / encoding and the
PyTorch, ONNX Runtime and OpenVINO kernels release the GIL, so on a machine with spare cores
the three stages run at the same time; on one core the pipeline still works, at the sum of the
stage costs. Per frame :class:`FrameTiming` records when it was read and written (total latency)
and how long inference took; :class:`PipelineStats` reports the throughput over the whole run
and a live FPS over the last frames (``on_frame`` is called with it after every written frame).
An exception in any stage stops the pipeline and is raised from :meth:`VideoPipeline.run`.
"""
from __future__ import annotations

import queue
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional

import numpy as np

__all__ = ["FrameTiming", "PipelineStats", "VideoPipeline", "read_frames"]

_END = object()


@dataclass
class FrameTiming:
    index: int
    read_s: float  # perf_counter when the frame was decoded
    infer_ms: float  # predictor call
    written_s: float = 0.0  # perf_counter when the sink returned

    @property
    def latency_ms(self) -> float:
        """Decode-to-written latency of this frame (queue waits included)."""
        return 1000.0 * (self.written_s - self.read_s)


@dataclass
class PipelineStats:
    frames: List[FrameTiming] = field(default_factory=list)
    started_s: float = 0.0
    window: int = 30

    @property
    def count(self) -> int:
        return len(self.frames)

    @property
    def fps(self) -> float:
        """Frames written per second since the start."""
        if not self.frames:
            return 0.0
        return self.count / max(self.frames[-1].written_s - self.started_s, 1e-9)

    @property
    def live_fps(self) -> float:
        """Frames per second over the last ``window`` written frames."""
        last = self.frames[-self.window:]
        if len(last) < 2:
            return self.fps
        return (len(last) - 1) / max(last[-1].written_s - last[0].written_s, 1e-9)

    def summary(self) -> Dict[str, float]:
        if not self.frames:
            return {"frames": 0}
        lat = [f.latency_ms for f in self.frames]
        inf = [f.infer_ms for f in self.frames]
        return {
            "frames": self.count, "fps": self.fps, "median_latency_ms": statistics.median(lat),
            "max_latency_ms": max(lat), "median_inference_ms": statistics.median(inf),
        }


def read_frames(capture, max_frames: int = 0) -> Iterable[np.ndarray]:
    """BGR frames of an opened ``cv2.VideoCapture`` (file, camera index or stream URL)."""
    n = 0
    while capture.isOpened() and (max_frames <= 0 or n < max_frames):
        ok, frame = capture.read()
        if not ok:
            break
        n += 1
        yield frame


class VideoPipeline:
    """Run ``predictor`` on every frame and ``sink(render(frame, predictions))`` in order.

    Args:
        predictor: ``predictor(frame, image_format) -> predictions`` (e.g. :class:`~.predictor.Predictor`).
        render: ``render(frame, predictions) -> output`` (drawing), run in the writer thread;
            None passes ``(frame, predictions)`` to the sink.
        sink: ``sink(output)`` (e.g. a ``cv2.VideoWriter.write``), run in the writer thread.
        image_format: channel order of the frames ("BGR" from OpenCV).
        queue_size: frames in flight per queue.
        on_frame: called with the :class:`PipelineStats` after every written frame (progress, live FPS).
    """

    def __init__(self, predictor: Callable, sink: Callable, render: Optional[Callable] = None,
                 image_format: str = "BGR", queue_size: int = 4,
                 on_frame: Optional[Callable[[PipelineStats], None]] = None) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size = {queue_size}: must be >= 1")
        self.predictor, self.sink, self.render = predictor, sink, render
        self.image_format, self.queue_size, self.on_frame = image_format, queue_size, on_frame

    def run(self, frames: Iterable[np.ndarray]) -> PipelineStats:
        q_in: "queue.Queue" = queue.Queue(self.queue_size)
        q_out: "queue.Queue" = queue.Queue(self.queue_size)
        stop = threading.Event()
        errors: List[BaseException] = []
        stats = PipelineStats(started_s=time.perf_counter())

        def put(q, item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def reader() -> None:
            try:
                for i, frame in enumerate(frames):
                    if not put(q_in, (i, time.perf_counter(), frame)):
                        return
            except BaseException as e:  # noqa: BLE001 - re-raised by run()
                errors.append(e)
                stop.set()
            finally:
                put(q_in, _END)

        def writer() -> None:
            try:
                while True:
                    item = q_out.get()
                    if item is _END:
                        return
                    timing, frame, pred = item
                    out = self.render(frame, pred) if self.render is not None else (frame, pred)
                    self.sink(out)
                    timing.written_s = time.perf_counter()
                    stats.frames.append(timing)
                    if self.on_frame is not None:
                        self.on_frame(stats)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
                stop.set()
                while q_out.get() is not _END:  # drain so that the inference loop can finish
                    pass

        threads = [threading.Thread(target=reader, daemon=True, name="medseg-video-read"),
                   threading.Thread(target=writer, daemon=True, name="medseg-video-write")]
        for t in threads:
            t.start()
        try:
            while not stop.is_set():
                try:
                    item = q_in.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is _END:
                    break
                i, t_read, frame = item
                t0 = time.perf_counter()
                pred = self.predictor(frame, self.image_format)
                timing = FrameTiming(i, t_read, 1000.0 * (time.perf_counter() - t0))
                if not put(q_out, (timing, frame, pred)):
                    break
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            stop.set()
        finally:
            q_out.put(_END)
            threads[1].join()
            stop.set()
            threads[0].join(timeout=5)
        if errors:
            raise errors[0]
        return stats
