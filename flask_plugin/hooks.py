"""What runs on every request: a WSGI middleware that times it and a thin wrapper around
``app.full_dispatch_request`` that tells it the endpoint, status and user.

Measured alternatives (on the development VM, Python 3.11, 2026-11): Flask's
``before_request``/``teardown_request`` hooks or signals cost 8-11 µs per request because every
call goes through ``ensure_sync`` and the context-local proxies; a WSGI middleware costs 2-5 µs
but cannot see the endpoint. The wrapper gives it the endpoint for the price of one extra call
and a context-variable read, and it sees every request that matched a rule -- including ones a
``before_request`` handler answered.

The clock runs from the moment the middleware is entered until the response is complete: when
the app returns for a response with a body in memory, when the body iterator is exhausted or
closed for a streamed one.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from time import perf_counter_ns
from types import CodeType
from typing import TYPE_CHECKING, Any, Protocol

from flask import Flask, Response
from flask.globals import _cv_request  # the request context (Flask >= 2.2)
from werkzeug.wsgi import ClosingIterator

from flamewatch.sampler.inflight import (
    DURATION,
    ENDPOINT,
    GROUP,
    OUTLIER,
    PARAMS,
    REQUEST,
    SAMPLING,
    STATUS,
    STREAMED,
    T0,
    THRESHOLD,
    Record,
)
from flamewatch.sampler.logs import log_swallowed

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from flamewatch.sampler import Recorder

    from .config import Settings


__all__ = ["HookedAgent", "install", "request_timer"]


class HookedAgent(Protocol):
    """What the request path uses of an :class:`~.agent.Agent` (which imports this module for
    :data:`ENTRY_CODE`: naming the class here would make the two modules a circle)."""

    @property
    def recorder(self) -> Recorder: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def unrouted(self) -> Callable[[Any, Any], Any] | None: ...
    @property
    def running(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    def describe_request(self, request: Any, read_body: bool = False) -> dict[str, Any]: ...
    def start(self) -> None: ...


#: the record of a request, from the dispatch wrapper to the middleware (set after Flask has
#: read the environ's headers: a key added before would cost every request ~600 CPU
#: instructions, as werkzeug looks for the cookie header through every key of the environ)
RECORD_KEY = "flamewatch.record"

#: the running thread's id; rebound when the agent starts, after gevent or eventlet patched
#: threading (if they did) to give a greenlet's id: two greenlets of one thread must not share
#: an entry of ``Recorder.starts``
get_ident = threading.get_ident

# Response bodies that are complete when the app returns. Flask turns an ``abort()`` or
# other WSGI-callable result into a response around a ClosingIterator over a finished body.
_PRODUCED = (list, tuple, ClosingIterator)


def install(app: Flask, agent: HookedAgent) -> None:
    """Put the middleware and the dispatch wrapper on ``app``.

    Neither holds the app: both replace methods of the app with attributes of its own, and a
    wrapper holding the bound method it replaces would make a cycle (app -> wrapper -> bound
    method -> app) that only the cyclic garbage collector could free -- an app dropped by its
    last reference must be freed at once, as Flask's own tests check.
    """
    app.wsgi_app = request_timer(  # type: ignore[method-assign,assignment]
        app.wsgi_app, agent, app=app
    )
    original = app.full_dispatch_request
    wrapper = _dispatch_wrapper(original, agent, _status_is_stored(app.response_class))
    app.full_dispatch_request = wrapper  # type: ignore[method-assign]


def _status_is_stored(response_class: type[Response]) -> bool:
    """Whether the app's responses keep their status code in ``_status_code``, as werkzeug's
    do: reading it there costs ~20 CPU instructions, against ~1,000 for the Python property
    ``status_code`` (a frame per request)."""
    try:
        response = response_class(status=299)
        return getattr(response, "_status_code", None) == 299 == response.status_code
    except Exception:
        return False


def _dispatch_wrapper(
    original: Callable[[], Response], agent: HookedAgent, status_is_stored: bool = False
) -> Callable[[], Response]:
    # Everything the request thread does is inlined here and in the middleware, with the
    # shared state bound to locals: each extra call or lookup costs ~0.1-0.5 µs per request.
    recorder = agent.recorder
    inflight = recorder.inflight
    starts = recorder.starts
    thresholds = recorder.thresholds_ns
    monitored_default = recorder.monitored_default
    group_by = agent.settings.group_by
    describe = agent.describe_request
    current = _cv_request.get
    # the app's own method is called with the app of the request context (see install);
    # another library's replacement is its own to hold
    own = isinstance(getattr(original, "__self__", None), Flask)
    dispatch: Callable[[Flask], Response] = (
        original.__func__  # type: ignore[attr-defined]
        if own
        else _ignoring_app(original)
    )

    def full_dispatch_request() -> Response:
        record = rule = None
        context = current()  # Flask dispatches inside a request context: as its own method
        try:
            request = context.request
            rule = request.url_rule
            if rule is not None:
                endpoint = rule.endpoint
                flag = recorder.monitored.get(endpoint)
                if flag is None:
                    flag = recorder.monitored[endpoint] = monitored_default(endpoint)
                thread_id = get_ident()
                t0 = starts.pop(thread_id, None)  # None: called without the middleware
                if flag and t0 is not None:
                    # the record (see flamewatch.sampler.inflight), registered for the sampler
                    record = request.environ[RECORD_KEY] = inflight[thread_id] = [
                        endpoint,
                        rule.rule,
                        request.method,
                        500,  # until the app answers otherwise
                        t0,
                        0,
                        None,
                        request.remote_addr,
                        thresholds.get(endpoint),
                        False,
                        thread_id,
                        request,  # an outlier's facts are taken from it, later
                        None,
                        False,
                        None,
                    ]
                    sampler = recorder.sampler
                    if sampler is not None and sampler.idle:  # only after a quiet second
                        sampler.wake()
        except Exception:
            log_swallowed("reading the request's endpoint")
        if record is None:
            response = dispatch(context.app)
            if rule is None and agent.unrouted is not None:  # a 404 or 405 (see Agent.unrouted)
                try:
                    response = agent.unrouted(context.request, response)
                except Exception:
                    log_swallowed("the dashboard's headers of an unrouted response")
            return response
        try:
            response = dispatch(context.app)
            record[STATUS] = response._status_code if status_is_stored else response.status_code
            if not isinstance(response.response, _PRODUCED):
                record[STREAMED] = True
            return response
        finally:
            try:
                if group_by is not None:
                    record[GROUP] = group_by(request)
                threshold = record[THRESHOLD]
                if threshold is not None and perf_counter_ns() - record[T0] > threshold:
                    # already an outlier: take its params while the body can still be read
                    record[PARAMS] = describe(request, read_body=True)
            except Exception:
                log_swallowed("the group_by callable or the request's facts")

    if not own:  # the app's own method would make a cycle (see install)
        full_dispatch_request.__wrapped__ = original  # type: ignore[attr-defined]
    return full_dispatch_request


def request_timer(
    wsgi_app: WSGIApplication, agent: HookedAgent, *, app: Flask | None = None
) -> WSGIApplication:
    """The WSGI middleware: starts the clock, and stops it when the response is complete.

    A closure rather than an object with ``__call__``: its state is in local cells, which is
    measurably cheaper per request than attribute lookups (see ``benchmarks/bench_overhead.py``).
    When ``wsgi_app`` is ``app``'s own bound method, the middleware holds the app weakly (see
    :func:`install`): it calls the method's function with the app from a weak reference.
    """
    # target() is the first argument of call: the app, weakly, or the callable itself -- from
    # C-level callables either way, so no Python frame is added per request
    call: Callable[..., Iterable[bytes]]
    target: Callable[[], object]
    own = app is not None and getattr(wsgi_app, "__self__", None) is app
    if own:
        call, target = wsgi_app.__func__, weakref.ref(app)  # type: ignore[attr-defined]
    else:
        call, target = type(wsgi_app).__call__, itertools.repeat(wsgi_app).__next__
    recorder = agent.recorder
    inflight = recorder.inflight
    starts = recorder.starts
    queue = recorder.queue
    end = recorder.end
    warm_up = recorder.warm_up

    def flamewatch_timer(
        environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        if not agent.running:
            if agent.closed:
                return call(target(), environ, start_response)
            _start(agent)
        thread_id = get_ident()
        starts[thread_id] = perf_counter_ns()  # taken by the dispatch wrapper
        try:
            body = call(target(), environ, start_response)
        except BaseException:
            starts.pop(thread_id, None)
            record = environ.pop(RECORD_KEY, None)
            if record is not None:
                record[STATUS] = 500
                _finish(end, record)
            raise
        record = environ.pop(RECORD_KEY, None)  # no cycle environ -> record -> environ
        if record is None:
            starts.pop(thread_id, None)
            return body
        if record[STREAMED]:
            return TimedBody(body, end, record)
        try:
            # Recorder.end, inlined: the response is complete, on the thread that began it
            duration = record[DURATION] = perf_counter_ns() - record[T0]
            inflight.pop(thread_id, None)
            threshold = record[THRESHOLD]
            if threshold is None:  # the endpoint warms up (see Recorder.warm_up)
                record[REQUEST] = record[SAMPLING] = None
                warm_up(record[ENDPOINT], duration)
            elif duration > threshold:
                record[OUTLIER] = True
            else:  # only an outlier's request facts and samples are read, later
                record[REQUEST] = record[SAMPLING] = None
            if len(queue) < recorder.queue_size:
                queue.append(tuple(record))  # a tuple of atoms: the garbage collector skips it
            else:
                recorder.count_dropped(1)
        except Exception:
            log_swallowed("recording a request")
        return body

    if not own:  # the app's own method would make a cycle (see install)
        flamewatch_timer.wsgi_app = wsgi_app  # type: ignore[attr-defined]
    return flamewatch_timer


#: the middleware's code object: an outlier's profile starts at its frame
ENTRY_CODE: CodeType = next(
    c for c in request_timer.__code__.co_consts if getattr(c, "co_name", "") == "flamewatch_timer"
)


def _ignoring_app(dispatch: Callable[[], Response]) -> Callable[[Flask], Response]:
    def call(app: Flask) -> Response:
        return dispatch()

    return call


def _start(agent: HookedAgent) -> None:
    global get_ident
    get_ident = threading.get_ident
    try:
        agent.start()
    except Exception:
        log_swallowed("starting the background threads")


def _finish(end: Callable[[Record, int], bool], record: Record) -> None:
    end_ns = perf_counter_ns()
    try:
        end(record, end_ns)
    except Exception:
        log_swallowed("recording a request")


class TimedBody:
    """A streamed response body; the request ends when it is exhausted or closed."""

    __slots__ = ("_body", "_end", "_iterator", "_record")

    def __init__(
        self, body: Iterable[bytes], end: Callable[[Record, int], bool], record: Record
    ) -> None:
        self._body = body
        self._iterator: Iterator[bytes] = iter(body)
        self._end: Callable[[Record, int], bool] | None = end
        self._record = record

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._iterator)
        except StopIteration:
            self._done()
            raise

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._done()

    def _done(self) -> None:
        end, self._end = self._end, None
        if end is not None:
            _finish(end, self._record)
