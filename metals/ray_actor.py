"""The Ray actors that run the ClientApp in a metals simulation.

A Ray worker imports the module of the actor class it hosts. Flower's own
class lives in ``flwr.simulation.ray_transport.ray_actor``, and importing it
imports all of ``flwr.simulation``: the simulation runtime, the link state
with SQLAlchemy and Alembic, and Flower's CLI with FastAPI. That took each
actor about 0.6 s of CPU on the 2-core machine before its first client, and
none of it runs in an actor. :class:`ClientActor` does the same work from
this module, which imports only Ray and Flower's message and ClientApp
types.

:class:`PreStartedActors` starts the actors as soon as Ray runs, so they
import torch and the ClientApp while the driver still imports its own
modules. :func:`light_client_actors` lets the simulation runtime use both.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import ray
from flwr.app import Context, Message
from flwr.clientapp.client_app import ClientApp, ClientAppException, LoadClientAppError

logger = logging.getLogger(__name__)

# Modules a client actor imports before its first message: the ClientApp,
# with torch and the data code. Together about 1 s of CPU on the 2-core
# machine, most of it torch.
WARM_UP_MODULES = ("metals.client.app",)


class _ClientActor:
    """Run one client's message through the ClientApp, as Flower's ClientAppActor does.

    Parameters
    ----------
    on_actor_init_fn : Callable[[], None] | None, default=None
        Called once when the actor starts.
    """

    def __init__(self, on_actor_init_fn: Callable[[], None] | None = None) -> None:
        if on_actor_init_fn is not None:
            on_actor_init_fn()

    def run(
        self,
        client_app_fn: Callable[[], ClientApp],
        message: Message,
        cid: str,
        context: Context,
    ) -> tuple[str, Message, Context]:
        """Return ``cid``, the ClientApp's reply to ``message`` and the updated ``context``.

        Raises
        ------
        LoadClientAppError
            When ``client_app_fn`` cannot load the ClientApp.
        ClientAppException
            When the ClientApp raised; the original error is its cause.
        """
        try:
            app = client_app_fn()
            reply = app(message=message, context=context)
        except LoadClientAppError:
            raise
        except Exception as error:
            raise ClientAppException(str(error)) from error
        return cid, reply, context

    def terminate(self) -> None:
        """End this actor's process."""
        logger.debug("client actor ends on request")
        ray.actor.exit_actor()


ClientActor = ray.remote(_ClientActor)


def warm_up(modules: Sequence[str], log_level: int | None = None) -> None:
    """Prepare a pre-started actor in its constructor: show metals' logs, import ``modules``.

    Parameters
    ----------
    modules : Sequence[str]
        Modules to import now, before the first message needs them.
    log_level : int | None, default=None
        When given, metals' records from this level up go to the actor's
        stderr, which Ray copies to the driver's console in a verbose run.
        A Ray worker's logging otherwise drops records below WARNING.
    """
    if log_level is not None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        metals_logger = logging.getLogger("metals")
        metals_logger.setLevel(log_level)
        metals_logger.addHandler(handler)
    for name in modules:
        importlib.import_module(name)


class _ActorRequest:
    """The result of ``PreStartedActors.options``: its ``remote`` starts or hands out an actor."""

    def __init__(self, actors: PreStartedActors, resources: dict[str, Any]) -> None:
        self._actors = actors
        self._resources = resources

    def remote(self, **kwargs: Any) -> Any:
        """Return a handle of a running :class:`ClientActor`."""
        return self._actors.take(self._resources, kwargs)


class PreStartedActors:
    """Client actors started and warmed up before the simulation runtime needs them.

    It takes the place of Flower's actor class in the Ray backend, which
    sizes its pool from ``client_resources`` and fills it by calling
    ``options(**resources).remote(**kwargs)`` once per place. Each actor
    here fills ``slots`` places: the backend runs one worker thread per
    place, so every actor has a second message queued while it runs one.
    Flower's backend hands an actor its next message only after the reply
    to the last one is back in the driver, which left each actor idle for
    about 3.5 ms per message (28% of its time on the 2-core machine).

    A request with :attr:`slot_resources` and no arguments gets a place on
    one of these actors. Any other request gets a new :class:`ClientActor`;
    the actors with no place handed out are stopped first, so that their
    CPUs are free for it.

    Parameters
    ----------
    count : int
        Actors to start now.
    resources : Mapping[str, Any]
        Ray resources of each actor, such as ``{"num_cpus": 1}``.
    modules : Sequence[str], default=WARM_UP_MODULES
        Modules each actor imports at once.
    slots : int, default=2
        Places in the backend's pool per actor.
    log_level : int | None, default=None
        Level from which the actors show metals' log records; see :func:`warm_up`.
    """

    def __init__(
        self,
        count: int,
        resources: Mapping[str, Any],
        modules: Sequence[str] = WARM_UP_MODULES,
        slots: int = 2,
        log_level: int | None = None,
    ) -> None:
        self._resources = dict(resources)
        self._slots = slots
        self._lock = threading.Lock()
        self._handed_out = 0
        # The warm-up runs in the constructor, so it starts without a round
        # trip to the driver, and the first message waits for it. A failed
        # import fails the actor; Flower then reports the failed message.
        prepare = functools.partial(warm_up, tuple(modules), log_level)
        self._actors = [
            ClientActor.options(**self._resources).remote(prepare) for _ in range(count)
        ]

    @property
    def slot_resources(self) -> dict[str, Any]:
        """The ``client_resources`` for the backend config: an actor's CPUs over its slots."""
        return {**self._resources, "num_cpus": self._resources["num_cpus"] / self._slots}

    def __len__(self) -> int:
        """Places not handed out yet."""
        return len(self._actors) * self._slots - self._handed_out

    def options(self, **resources: Any) -> _ActorRequest:
        """Return a request for one place with ``resources``."""
        return _ActorRequest(self, resources)

    def take(self, resources: Mapping[str, Any], kwargs: Mapping[str, Any]) -> Any:
        """Hand out a place on a pre-started actor that fits the request, or start a new actor.

        Places go round the actors, so the first ``count`` requests get one
        actor each.
        """
        with self._lock:
            if dict(resources) == self.slot_resources and not kwargs and len(self) > 0:
                actor = self._actors[self._handed_out % len(self._actors)]
                self._handed_out += 1
                return actor
        self.release()
        return ClientActor.options(**resources).remote(**kwargs)

    def release(self) -> None:
        """Stop the pre-started actors that have no place handed out."""
        with self._lock:
            used = min(self._handed_out, len(self._actors))
            unused, self._actors = self._actors[used:], self._actors[:used]
            self._handed_out = len(self._actors) * self._slots
        if not ray.is_initialized():
            return  # Ray's shutdown stopped them
        for actor in unused:
            ray.kill(actor)


def _method_parameters(actor_class: Any) -> dict[str, list[str]] | None:
    """Map each public method of a Ray actor class to its parameter names."""
    wrapped = getattr(actor_class, "__ray_actor_class__", None)
    if wrapped is None:
        return None
    methods = {
        name: list(inspect.signature(member).parameters)
        for name, member in inspect.getmembers(wrapped, inspect.isfunction)
        if not name.startswith("_")
    }
    methods["__init__"] = list(inspect.signature(wrapped.__init__).parameters)
    return methods


def _same_methods(flower_class: Any) -> bool:
    """Return whether :class:`ClientActor` has each method of ``flower_class``.

    A method counts only with the same parameter names.
    """
    theirs = _method_parameters(flower_class)
    ours = _method_parameters(ClientActor)
    if theirs is None or ours is None:
        return False
    return all(ours.get(name) == parameters for name, parameters in theirs.items())


@contextmanager
def light_client_actors(pre_started: PreStartedActors | None = None) -> Iterator[bool]:
    """Let Flower's Ray backend use :class:`ClientActor` instead of its own actor class.

    The swap applies to the backends built inside the block. When the
    installed Flower's actor class has a method that :class:`ClientActor`
    lacks or has with other parameters, nothing changes and the block
    yields False.

    Parameters
    ----------
    pre_started : PreStartedActors | None, default=None
        Actors for the backend to take first. The ones it did not take are
        stopped when the block ends.

    Yields
    ------
    bool
        True when the backend uses :class:`ClientActor`.
    """
    from flwr.server.superlink.fleet.vce.backend import raybackend

    original = getattr(raybackend, "ClientAppActor", None)
    if original is None or not _same_methods(original):
        logger.debug("Flower's client actor has other methods here, so it stays unchanged")
        if pre_started is not None:
            pre_started.release()
        yield False
        return
    raybackend.ClientAppActor = pre_started if pre_started is not None else ClientActor
    try:
        yield True
    finally:
        raybackend.ClientAppActor = original
        if pre_started is not None:
            pre_started.release()
