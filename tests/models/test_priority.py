"""The priority gate: an upload's next batch waits while a question uses a model (real threads)."""
import threading
import time

from rag.models.priority import PriorityGate


def test_background_work_waits_for_urgent_work_and_never_for_good():
    gate = PriorityGate()
    assert gate.wait_turn(0.01)  # nothing urgent: no wait
    passed_at = []

    def background() -> None:
        gate.wait_turn(5)
        passed_at.append(time.monotonic())

    with gate.urgent():
        thread = threading.Thread(target=background)
        thread.start()
        time.sleep(0.2)
        assert not passed_at and gate.busy  # held back while the question runs
        released_at = time.monotonic()
    thread.join(5)
    assert passed_at and passed_at[0] >= released_at and not gate.busy
    with gate.urgent():
        started = time.monotonic()
        assert gate.wait_turn(0.1) is False  # a stream of questions slows an upload, never stalls it
        assert time.monotonic() - started < 1
