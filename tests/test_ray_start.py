"""How a simulation starts Ray and its client actors: fewer processes, warm actors."""

import time

import pytest
import ray
from flwr.clientapp.client_app import ClientAppException
from flwr.server.superlink.fleet.vce.backend import raybackend
from ray._private import node as ray_node_module
from ray._private import ray_constants

import metals.ray_node as ray_node
from metals.ray_actor import ClientActor, PreStartedActors, light_client_actors, warm_up
from metals.simulation import start_ray, stop_ray

_LEFT_OUT = (
    ray_constants.PROCESS_TYPE_MONITOR,
    ray_constants.PROCESS_TYPE_DASHBOARD,
    ray_constants.PROCESS_TYPE_LOG_MONITOR,
)


@pytest.fixture()
def no_ray():
    """Skip when another test left Ray running, and shut Ray down afterwards."""
    if ray.is_initialized():
        pytest.skip("another test left Ray running")
    yield
    stop_ray()


@ray.remote(num_cpus=1)
def _square(value):
    return value * value


def _node_processes():
    return ray._private.worker._global_node.all_processes


def test_lean_local_node_restores_methods():
    # Prepare
    node_class = ray_node_module.Node
    before = {name: getattr(node_class, name) for name in ray_node._NODE_METHODS}

    # Execute
    with ray_node.lean_local_node(keep_log_monitor=True) as lean:
        inside = {name: getattr(node_class, name) for name in ray_node._NODE_METHODS}
    after = {name: getattr(node_class, name) for name in ray_node._NODE_METHODS}

    # Assert: the installed Ray matches; the log monitor stays; all come back.
    assert lean is True
    assert inside["start_monitor"] is not before["start_monitor"]
    assert inside["start_api_server"] is not before["start_api_server"]
    assert inside["start_log_monitor"] is before["start_log_monitor"]
    assert after == before


def test_lean_local_node_skips_other_signatures(monkeypatch):
    # Prepare: a Ray whose start_monitor takes another parameter.
    def start_monitor(self, autoscaling_config=None):
        raise AssertionError("not called here")

    monkeypatch.setattr(ray_node_module.Node, "start_monitor", start_monitor)
    original_api_server = ray_node_module.Node.start_api_server

    # Execute
    with ray_node.lean_local_node(keep_log_monitor=False) as lean:
        inside = ray_node_module.Node.start_api_server

    # Assert: nothing was replaced.
    assert lean is False
    assert inside is original_api_server
    assert ray_node_module.Node.start_monitor is start_monitor


class _SilentGcs:
    """A GCS client stand-in that never lists a node."""

    def __init__(self):
        self.calls = 0

    def get_all_node_info(self, timeout=None):
        self.calls += 1
        return {}


class _UnregisteredNode:
    node_id = "ab" * 28

    def __init__(self):
        self.client = _SilentGcs()

    def get_gcs_client(self):
        return self.client


def test_registration_wait_times_out():
    # Prepare
    node = _UnregisteredNode()

    # Execute
    started = time.monotonic()
    registered = ray_node.wait_for_registration(node, timeout=0.1)
    waited = time.monotonic() - started

    # Assert: it asked more than once, then gave up instead of waiting forever.
    assert registered is False
    assert node.client.calls > 1
    assert waited < 5


@pytest.mark.slow
def test_start_ray_leaves_out_unused_processes(no_ray):
    # Execute
    start_ray(num_cpus=1)
    processes = dict(_node_processes())
    registered = ray_node.wait_for_registration(ray._private.worker._global_node, timeout=5)
    result = ray.get(_square.remote(7))

    # Assert: no monitor, dashboard server or log monitor; the node works.
    assert [kind for kind in _LEFT_OUT if processes.get(kind)] == []
    assert processes.get(ray_constants.PROCESS_TYPE_RAYLET)
    assert registered is True
    assert result == 49


@pytest.mark.slow
def test_start_ray_verbose_keeps_log_monitor(no_ray):
    # Execute
    start_ray(num_cpus=1, verbose=True)
    processes = dict(_node_processes())

    # Assert: worker output still reaches the driver in a verbose run.
    assert processes.get(ray_constants.PROCESS_TYPE_LOG_MONITOR)
    assert not processes.get(ray_constants.PROCESS_TYPE_MONITOR)


@pytest.mark.slow
def test_start_ray_fallback_stops_monitor(no_ray, monkeypatch):
    # Prepare: a Node with another start_monitor signature starts as usual.
    original = ray_node_module.Node.start_monitor

    def start_monitor(self, *args):
        return original(self, *args)

    monkeypatch.setattr(ray_node_module.Node, "start_monitor", start_monitor)

    # Execute
    start_ray(num_cpus=1)
    monitors = list(_node_processes().get(ray_constants.PROCESS_TYPE_MONITOR, []))
    result = ray.get(_square.remote(6))

    # Assert: the monitor was started, then stopped, and tasks still run.
    assert monitors
    assert all(info.process.poll() is not None for info in monitors)
    assert result == 36


def test_light_client_actors_swaps_then_restores():
    # Prepare: no actors to start, so no Ray is needed.
    original = raybackend.ClientAppActor
    pre_started = PreStartedActors(0, {"num_cpus": 1})

    # Execute
    with light_client_actors() as plain:
        plain_inside = raybackend.ClientAppActor
    with light_client_actors(pre_started) as warm:
        warm_inside = raybackend.ClientAppActor

    # Assert
    assert plain is True
    assert warm is True
    assert plain_inside is ClientActor
    assert warm_inside is pre_started
    assert raybackend.ClientAppActor is original


def test_light_client_actors_skips_other_methods(monkeypatch):
    # Prepare: a Flower actor whose run takes another argument.
    @ray.remote
    class OtherActor:
        def run(self, client_app_fn, message, cid, context, timeout):
            return cid, message, context

        def terminate(self):
            pass

    monkeypatch.setattr(raybackend, "ClientAppActor", OtherActor)

    # Execute
    with light_client_actors() as light:
        inside = raybackend.ClientAppActor

    # Assert
    assert light is False
    assert inside is OtherActor


@pytest.mark.slow
def test_pre_started_actor_skips_flower_simulation(no_ray):
    # Prepare
    start_ray(num_cpus=2)
    pre_started = PreStartedActors(1, {"num_cpus": 1})

    def loaded(actor_self):
        import sys

        return {name: name in sys.modules for name in ("torch", "flwr.simulation", "pandas")}

    # Execute
    actor = pre_started.options(**pre_started.slot_resources).remote()
    modules = ray.get(actor.__ray_call__.remote(loaded), timeout=120)

    # Assert: the warm-up loaded torch; Flower's simulation and pandas stayed out.
    assert modules == {"torch": True, "flwr.simulation": False, "pandas": False}
    assert len(pre_started) == 1


def test_warm_up_shows_metals_info_records(capfd):
    # Prepare: the state of a fresh Ray worker, which drops INFO records.
    import logging

    metals_logger = logging.getLogger("metals")
    previous = (metals_logger.level, list(metals_logger.handlers))
    metals_logger.setLevel(logging.NOTSET)

    try:
        # Execute
        warm_up(("json",), logging.INFO)
        logging.getLogger("metals.client.app").info(
            "round %d, %s: labels queried", 3, "partition-7"
        )
    finally:
        metals_logger.setLevel(previous[0])
        metals_logger.handlers[:] = previous[1]

    # Assert: the record reached stderr, which Ray copies to the console.
    assert "INFO metals.client.app: round 3, partition-7: labels queried" in capfd.readouterr().err


def test_pre_started_slot_resources_split_cpus():
    # Prepare: no actors to start, so no Ray is needed.
    pre_started = PreStartedActors(0, {"num_cpus": 1, "num_gpus": 0.0}, slots=2)

    # Assert: Flower sizes its pool at two places per CPU.
    assert pre_started.slot_resources == {"num_cpus": 0.5, "num_gpus": 0.0}
    assert len(pre_started) == 0


@pytest.mark.slow
def test_pre_started_places_go_round_actors(no_ray):
    # Prepare
    start_ray(num_cpus=2)
    pre_started = PreStartedActors(2, {"num_cpus": 1}, modules=(), slots=2)
    request = pre_started.slot_resources

    # Execute: four places, and a message on each.
    places = [pre_started.options(**request).remote() for _ in range(4)]
    replies = ray.get(
        [
            place.run.remote(_echo_app(), f"m{number}", str(number), "c")
            for number, place in enumerate(places)
        ],
        timeout=120,
    )

    # Assert: two actors, each holding two places, ran all four messages.
    assert places[0] is places[2]
    assert places[1] is places[3]
    assert places[0] is not places[1]
    assert [reply[1] for reply in replies] == [
        "reply to m0",
        "reply to m1",
        "reply to m2",
        "reply to m3",
    ]
    assert len(pre_started) == 0


def _echo_app():
    """Return a ClientApp stand-in class that replies to every message.

    A class defined in a function travels to Ray's workers by value; one at
    module level would have to be importable there.
    """

    class Echo:
        def __call__(self, message, context):
            return f"reply to {message}"

    return Echo


@pytest.mark.slow
def test_other_request_frees_pre_started(no_ray):
    # Prepare: both CPUs held by pre-started actors.
    start_ray(num_cpus=2)
    pre_started = PreStartedActors(2, {"num_cpus": 1}, modules=())

    # Execute: an actor that needs both CPUs.
    actor = pre_started.options(num_cpus=2).remote()
    ready = ray.get(actor.__ray_ready__.remote(), timeout=60)

    # Assert: the idle actors were stopped, so the new one could start.
    assert ready is True
    assert len(pre_started) == 0


@pytest.mark.slow
def test_client_actor_wraps_app_errors(no_ray):
    # Prepare
    start_ray(num_cpus=1)
    actor = ClientActor.options(num_cpus=1).remote()

    class BrokenApp:
        def __call__(self, message, context):
            raise KeyError("no pool file")

    # Execute
    reply = ray.get(actor.run.remote(_echo_app(), "train", "7", "context"), timeout=60)
    with pytest.raises(ClientAppException) as raised:
        ray.get(actor.run.remote(BrokenApp, "train", "8", "context"), timeout=60)

    # Assert
    assert reply == ("7", "reply to train", "context")
    assert "no pool file" in str(raised.value)
