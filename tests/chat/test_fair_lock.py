"""The chat model's lock serves waiting questions in the order they came (tuning/chat/fair_lock.py)."""

import threading
import time

from tuning.chat.fair_lock import FairLock


def test_waiters_get_the_lock_in_the_order_they_asked():
    lock, served = FairLock(), []
    lock.acquire()
    threads = []
    for number in range(8):
        thread = threading.Thread(target=lambda n=number: (lock.acquire(), served.append(n), lock.release()))
        thread.start()
        threads.append(thread)
        while len(lock._waiters) < number + 1:  # queued before the next one asks
            time.sleep(0.001)
    lock.release()
    for thread in threads:
        thread.join(timeout=10)
    assert served == list(range(8))


def test_a_releasing_thread_cannot_jump_the_queue():
    """The thread that just released asks again at once: it goes behind the one already waiting."""
    lock, served = FairLock(), []
    lock.acquire()
    waiter = threading.Thread(target=lambda: (lock.acquire(), served.append("waiter"), lock.release()))
    waiter.start()
    while not lock._waiters:
        time.sleep(0.001)
    lock.release()
    with lock:
        served.append("again")
    waiter.join(timeout=10)
    assert served == ["waiter", "again"]
