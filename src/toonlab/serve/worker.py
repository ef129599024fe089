"""A fixed pool of worker threads behind a bounded queue: the server never holds more than
``workers + queue_size`` jobs (running or waiting), so memory stays bounded under any load.

Threads, not processes: the heavy work (PyTorch ops, Pillow decode/encode) releases the GIL, and the loaded
models are shared read-only without being copied per process.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Callable


class QueueFull(Exception):
    """The pool already holds its maximum number of jobs (the server answers 503)."""


class WorkerPool:
    """``workers`` daemon threads taking jobs from a queue of at most ``queue_size`` waiting jobs.

    `submit` never blocks: it returns a Future, or raises QueueFull when ``workers + queue_size`` jobs are already
    admitted. A job whose Future was cancelled before a worker took it is dropped without running.
    """

    def __init__(self, workers: int, queue_size: int, name: str = "toonlab-worker"):
        self.capacity = workers + queue_size
        self._slots = threading.BoundedSemaphore(self.capacity)  # admitted = running + waiting
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()  # bounded by the semaphore
        self._lock = threading.Lock()
        self._admitted = 0
        self._closed = False
        self._threads = [threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    @property
    def admitted(self) -> int:
        """Jobs running or waiting now."""
        return self._admitted

    def busy_message(self) -> str:
        return f"server busy: {self.capacity} requests already running or queued"

    def submit(self, fn: Callable, *args, **kwargs) -> Future:
        if self._closed:
            raise RuntimeError("worker pool is closed")
        if not self._slots.acquire(blocking=False):
            raise QueueFull(self.busy_message())
        with self._lock:
            self._admitted += 1
        fut: Future = Future()
        self._jobs.put((fut, fn, args, kwargs))
        return fut

    def _release(self):
        with self._lock:
            self._admitted -= 1
        self._slots.release()

    def _run(self):
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fut, fn, args, kwargs = job
            if not fut.set_running_or_notify_cancel():  # cancelled while waiting: dropped unrun
                self._release()
                continue
            try:
                result, error = fn(*args, **kwargs), None
            except BaseException as e:  # handed to the waiting request, never lost
                result, error = None, e
            self._release()  # before the waiter wakes, so a finished job never counts against the bound
            if error is None:
                fut.set_result(result)
            else:
                fut.set_exception(error)

    def close(self, wait: bool = True, timeout: float | None = 30.0):
        """Stop taking jobs; let the workers finish what they hold (joined up to ``timeout`` s each)."""
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            for t in self._threads:
                t.join(timeout)
