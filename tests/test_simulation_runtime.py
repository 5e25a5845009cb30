"""How metals tunes Flower's simulation runtime: prompt message pick-up, short queue waits, Ray."""

import inspect
import os
import queue
import signal
import subprocess
import sys
import threading

import pytest
from flwr.server.superlink.fleet.vce import vce_api

import metals.simulation as simulation
from metals.simulation import (
    AfterRounds,
    NodePartitions,
    PromptQueue,
    PushedNodes,
    forward_messages,
    prompt_runtime,
    stop_on_sigint,
    store_replies,
)


class _State:
    """Link state stand-in: undelivered messages per node id, handed out ``limit`` at a time."""

    def __init__(self, pending):
        self.pending = {node_id: list(messages) for node_id, messages in pending.items()}
        self.lock = threading.Lock()

    def add(self, node_id, message):
        with self.lock:
            self.pending.setdefault(node_id, []).append(message)

    def get_message_ins(self, node_id, limit):
        with self.lock:
            waiting = self.pending.get(node_id, [])
            count = len(waiting) if limit is None else limit
            self.pending[node_id] = waiting[count:]
        return waiting[:count]


def _take(message_queue, count):
    return [message_queue.get(timeout=10) for _ in range(count)]


def _start_forwarding(state, message_queue, pushed, f_stop):
    loop = threading.Thread(
        target=forward_messages,
        args=(state, message_queue, {1: 0, 2: 1, 3: 2}, f_stop),
        kwargs={"pushed": pushed},
    )
    loop.start()
    return loop


def test_forward_messages_takes_pushed_nodes(monkeypatch):
    # Prepare: without a full pass in the next hour, only pushes wake the loop.
    monkeypatch.setattr(simulation, "FORWARD_FALLBACK_SECONDS", 3600.0)
    state = _State({1: ["a", "b"], 2: ["c"], 3: ["not pushed"]})
    message_queue, pushed, f_stop = queue.Queue(), PushedNodes(), threading.Event()
    pushed.add([1, 2])

    # Execute
    loop = _start_forwarding(state, message_queue, pushed, f_stop)
    try:
        first = _take(message_queue, 3)
        state.add(2, "d")
        pushed.add([2])
        second = _take(message_queue, 1)
    finally:
        f_stop.set()
        loop.join(timeout=10)

    # Assert: both messages of node 1 went out, the push brought "d", and the loop ended.
    assert sorted(first) == ["a", "b", "c"]
    assert second == ["d"]
    assert message_queue.empty()
    assert state.pending[3] == ["not pushed"]
    assert not loop.is_alive()


def test_forward_messages_records_node_partitions():
    # Prepare: Flower passes the node-id-to-partition mapping as ``nodes``.
    partitions, f_stop = NodePartitions(), threading.Event()
    f_stop.set()

    # Execute: the loop records the mapping before its first turn.
    forward_messages(
        _State({}),
        queue.Queue(),
        {11: 0, 42: 1},
        f_stop,
        pushed=PushedNodes(),
        partitions=partitions,
    )

    # Assert
    assert partitions.get(timeout=0) == {11: 0, 42: 1}


def test_node_partitions_unknown_after_timeout():
    # Execute
    found = NodePartitions().get(timeout=0.01)

    # Assert
    assert found == {}


def test_forward_messages_full_pass_without_push(monkeypatch):
    # Prepare: a full pass on every turn of the loop, and no push at all.
    monkeypatch.setattr(simulation, "FORWARD_FALLBACK_SECONDS", 0.0)
    state = _State({3: ["e"]})
    message_queue, f_stop = queue.Queue(), threading.Event()

    # Execute
    loop = _start_forwarding(state, message_queue, PushedNodes(), f_stop)
    try:
        found = _take(message_queue, 1)
    finally:
        f_stop.set()
        loop.join(timeout=10)

    # Assert
    assert found == ["e"]
    assert not loop.is_alive()


def test_prompt_queue_empty_gives_up_early():
    # Prepare
    message_queue = PromptQueue()
    outcome = []

    def wait_long():
        try:
            message_queue.get(timeout=600)
        except queue.Empty:
            outcome.append("empty")

    waiter = threading.Thread(target=wait_long)

    # Execute: a plain queue.Queue would wait 600 s here.
    waiter.start()
    waiter.join(timeout=30)

    # Assert
    assert outcome == ["empty"]


def test_prompt_queue_returns_items_in_order():
    # Prepare
    message_queue = PromptQueue()
    message_queue.put("a")
    message_queue.put("b")

    # Execute and assert
    assert message_queue.get(timeout=1.0) == "a"
    assert message_queue.get() == "b"
    with pytest.raises(queue.Empty):
        message_queue.get(block=False)


def test_prompt_runtime_swaps_then_restores():
    # Prepare
    originals = (
        vce_api.add_messages_to_queue,
        vce_api.put_message_into_state,
        vce_api.Queue,
    )
    pushed, replied, partitions = PushedNodes(), threading.Event(), NodePartitions()

    # Execute
    with prompt_runtime(pushed, replied, partitions) as swapped:
        inside = (
            vce_api.add_messages_to_queue,
            vce_api.put_message_into_state,
            vce_api.Queue,
        )

    # Assert
    assert swapped is True
    assert inside[0].func is forward_messages
    assert inside[0].keywords == {"pushed": pushed, "partitions": partitions}
    assert inside[1].func is store_replies
    assert inside[1].keywords == {"replied": replied}
    assert inside[2] is PromptQueue
    assert (
        vce_api.add_messages_to_queue,
        vce_api.put_message_into_state,
        vce_api.Queue,
    ) == originals


def test_prompt_runtime_skips_other_signatures(monkeypatch):
    # Prepare: a Flower version whose reply loop takes other parameters.
    def other_loop(state, queue, f_stop, interval):
        raise AssertionError("not called here")

    monkeypatch.setattr(vce_api, "put_message_into_state", other_loop)
    original_forward = vce_api.add_messages_to_queue

    partitions = NodePartitions()

    # Execute
    with prompt_runtime(PushedNodes(), threading.Event(), partitions) as swapped:
        inside = (vce_api.add_messages_to_queue, vce_api.put_message_into_state)

    # Assert: unchanged, and the grid learns at once that it must query the nodes.
    assert swapped is False
    assert inside == (original_forward, other_loop)
    assert partitions.get(timeout=0) == {}


def test_flower_loops_match_swapped_parameters():
    # Assert: the Flower version installed here is one prompt_runtime swaps.
    forward = list(inspect.signature(vce_api.add_messages_to_queue).parameters)
    store = list(inspect.signature(vce_api.put_message_into_state).parameters)
    assert forward == simulation._FORWARD_PARAMETERS
    assert store == simulation._STORE_PARAMETERS


class _ReplyState:
    def __init__(self):
        self.stored = []

    def store_message_res(self, message):
        self.stored.append(message)


def test_store_replies_signals_each_reply():
    # Prepare
    state, message_queue = _ReplyState(), queue.Queue()
    f_stop, replied = threading.Event(), threading.Event()
    loop = threading.Thread(
        target=store_replies, args=(state, message_queue, f_stop), kwargs={"replied": replied}
    )

    # Execute
    loop.start()
    try:
        message_queue.put("reply-1")
        signalled = replied.wait(timeout=10)
    finally:
        f_stop.set()
        loop.join(timeout=10)

    # Assert: the reply was stored before the signal, and the loop ended.
    assert signalled
    assert state.stored == ["reply-1"]
    assert not loop.is_alive()


def test_after_rounds_returns_error(tmp_path):
    # Prepare
    seen = []

    def fail(run_dir):
        seen.append(run_dir)
        raise ValueError("table failed")

    after_rounds = AfterRounds(fail, tmp_path)

    # Execute
    after_rounds.start()
    after_rounds.join()

    # Assert: the error comes back in the caller's thread.
    assert seen == [tmp_path]
    with pytest.raises(ValueError, match="table failed"):
        after_rounds.raise_error()


def test_after_rounds_not_started_raises_nothing(tmp_path):
    # Prepare
    after_rounds = AfterRounds(lambda run_dir: None, tmp_path)

    # Execute and assert
    after_rounds.join()
    after_rounds.raise_error()


def test_stop_on_sigint_ignores_repeated_signal():
    # Prepare: timeout(1) delivers one interrupt to the process and to its group.
    stop = threading.Event()

    # Execute
    with stop_on_sigint(stop):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)

    # Assert: the run stops, without a forced KeyboardInterrupt.
    assert stop.is_set()


def test_stop_on_sigint_later_signal_forces(monkeypatch):
    # Prepare: every repeat counts as a second press of Ctrl-C.
    monkeypatch.setattr(simulation, "REPEATED_SIGINT_SECONDS", 0.0)
    stop = threading.Event()

    # Execute and assert
    with pytest.raises(KeyboardInterrupt), stop_on_sigint(stop):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
    assert stop.is_set()


def test_run_path_skips_flower_and_pandas():
    # Prepare: the modules `metals run` imports before Ray starts, in a fresh interpreter.
    code = (
        "import sys\n"
        "import metals.cli, metals.config, metals.progress, metals.simulation\n"
        "import metals.server.checkpoint, metals.tables\n"
        "print(sorted(name for name in ('flwr', 'pandas', 'torch') if name in sys.modules))\n"
    )

    # Execute
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )

    # Assert: these load in the thread that imports while Ray starts.
    assert result.stdout.strip() == "[]"
