"""A background reader: run an iterator in a thread a few items ahead, so reading overlaps the consumer."""

from __future__ import annotations

import queue
import threading
from typing import Iterator, TypeVar

T = TypeVar("T")


def prefetch(it: Iterator[T], depth: int = 1, name: str = "a2fbench-reader") -> Iterator[T]:
    """Yield the items of ``it``, produced in a daemon thread up to ``depth`` items ahead (numpy, h5py reads
    and hashing release the GIL). An error in the thread is re-raised in the consumer; when the consumer stops
    early (break, error, close) the thread is told to stop and joined, so no thread outlives the loop."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            q.put(e)

    t = threading.Thread(target=work, name=name, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():  # drain, so that a producer blocked on a full queue sees the stop
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        t.join()
