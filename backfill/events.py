"""The ledger events a backfill writes: one typed value per kind, one registry, one decoder.

A backfill's state is never stored: ``backfill.backfills`` folds these events into it. The ledger
stores ``(kind, payload)`` with the payload as JSON, and the hash chain covers those exact bytes,
so ``decode`` never loses a key: a payload key a type does not model, or whose value does not fit
the field's type, is kept in ``extra``, and ``encode(decode(kind, payload))`` gives the payload
back as it was stored (``tests/test_events.py``). Writers still hand the ledger plain payloads
(their bytes are what the chain hashes); readers decode once and match on the types.

The types are frozen keyword-only dataclasses (``@event``): ``dataclasses.fields``, ``replace``,
equality, hashing and ``repr`` behave as with ``@dataclass(frozen=True, kw_only=True)``, but the
methods are the ones ``Event`` defines once, instead of six generated and compiled per type (30
types: most of the import, which every command that reads the ledger pays; issue 14).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, FrozenInstanceError, dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar, dataclass_transform

REQUESTED: Final = "backfill.requested"
APPROVED: Final = "backfill.approved"
REJECTED: Final = "backfill.rejected"
EXPIRED: Final = "backfill.expired"
STARTED: Final = "backfill.started"
CANARY_PAUSED: Final = "gate.canary-paused"
CANARY_APPROVED: Final = "gate.canary-approved"
WINDOW_ACCEPTED: Final = "gate.window-accepted"
STOP_REQUESTED: Final = "backfill.stop-requested"
COMPLETED: Final = "backfill.completed"
FAILED: Final = "backfill.failed"
STOPPED: Final = "backfill.stopped"
RESUMED: Final = "backfill.resumed"  # run --resume of a stopped backfill: who let it go on

WINDOW_SKIPPED: Final = "window.skipped"
WINDOW_CHECKED: Final = "window.checked"
WINDOW_INTENT: Final = "window.intent"
WINDOW_CREATED: Final = "window.created"
WINDOW_ADOPTED: Final = "window.adopted"
WINDOW_CREATE_FAILED: Final = "window.create-failed"
WINDOW_STATUS: Final = "window.status"
WINDOW_FINISHED: Final = "window.finished"
WINDOW_NEEDS_OPERATOR: Final = "window.needs-operator"
WINDOW_CANCELLED: Final = "window.cancel-requested"
# Run investigation (SPEC §12): about one ADF run, or an export; outside any backfill's fold.
RUN_CANCEL_REQUESTED: Final = "run.cancel-requested"
RUN_CANCELLED: Final = "run.cancelled"
RUNS_EXPORTED: Final = "runs.exported"


_E = TypeVar("_E", bound="type[Event]")


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(field,))
def event(cls: _E) -> _E:
    """``@dataclass(frozen=True, kw_only=True)`` in effect: the fields are a dataclass's, the
    methods ``Event``'s (see the module's docstring)."""
    if cls.__doc__ is None:
        cls.__doc__ = f"The {cls.kind or cls.__name__} event."  # dataclass would inspect a signature
    dataclass(init=False, repr=False, eq=False, kw_only=True)(cls)
    specs = fields(cls)
    cls._init = tuple((f.name, f.default, f.default_factory) for f in specs)
    cls._compared = tuple(f.name for f in specs if f.compare)
    # As dataclass hashes: the compared fields, less those marked hash=False.
    cls._hashed = tuple(f.name for f in specs if (f.compare if f.hash is None else f.hash))
    return cls


@event
class Event:
    """A payload of some kind; ``extra`` holds what the type does not model, verbatim."""

    kind: ClassVar[str] = ""
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # Set by @event for each type: (name, default, default factory) of each field, in order; the
    # fields compared and hashed.
    _init: ClassVar[tuple[tuple[str, Any, Callable[[], Any] | Any], ...]] = ()
    _compared: ClassVar[tuple[str, ...]] = ()
    _hashed: ClassVar[tuple[str, ...]] = ()

    if not TYPE_CHECKING:  # type checkers see the frozen dataclass's methods that @event stands for

        def __init__(self, **values: Any) -> None:
            cls = type(self)
            state: dict[str, Any] = {}
            for name, default, factory in cls._init:
                if name in values:
                    state[name] = values.pop(name)
                elif factory is not MISSING:
                    state[name] = factory()
                elif default is not MISSING:
                    state[name] = default
                else:
                    raise TypeError(f"{cls.__qualname__}.__init__() missing keyword-only argument: {name!r}")
            if values:
                raise TypeError(
                    f"{cls.__qualname__}.__init__() got an unexpected keyword argument {next(iter(values))!r}"
                )
            self.__dict__.update(state)

        # Frozen. Hidden from type checkers too: a __setattr__ would let them allow any assignment.
        def __setattr__(self, name: str, value: Any) -> None:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")

        def __delattr__(self, name: str) -> None:
            raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        names = self._compared
        return tuple(getattr(self, name) for name in names) == tuple(getattr(other, name) for name in names)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, name) for name in self._hashed))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name, _, _ in self._init)
        return f"{type(self).__qualname__}({shown})"


@event
class BackfillEvent(Event):
    """An event about the whole backfill; ``note`` or ``reason`` is what a reviewer wrote."""

    note: str | None = None
    reason: str | None = None


@event
class WindowEvent(Event):
    """An event about one window (its ledger ``window_key``): any of them may name the run, its
    ADF status (Queued, InProgress, Succeeded...) and why."""

    run_id: str | None = None
    status: str | None = None
    reason: str | None = None
    message: str | None = None


@event
class Requested(BackfillEvent):
    """The sealed request (spec §15): what gates and ``run`` read instead of the mutable row."""

    kind: ClassVar[str] = REQUESTED
    plan_path: str | None = None
    plan_hash: str | None = None
    title: str | None = None
    ticket: str | None = None
    pipeline: str | None = None
    factory: str | None = None
    approval: Mapping[str, Any] | None = None
    summary: Mapping[str, Any] | None = None
    runnable: list[Any] | None = None
    blocked: Mapping[str, Any] | list[Any] | None = None  # a list in requests before issue 9
    requester: Mapping[str, Any] | None = None
    seal: Mapping[str, Any] | None = None
    windows: Mapping[str, Any] | None = None


@event
class Approved(BackfillEvent):
    kind: ClassVar[str] = APPROVED
    approval: int | None = None  # which approval this is, of ``required``
    required: int | None = None


@event
class Ended(BackfillEvent):
    """An event that ends the backfill or its wait; ``windows`` tallies window states."""

    windows: Mapping[str, Any] | None = None


@event
class Rejected(Ended):
    kind: ClassVar[str] = REJECTED


@event
class Expired(Ended):
    kind: ClassVar[str] = EXPIRED
    expired_at: str | None = None


@event
class Completed(Ended):
    kind: ClassVar[str] = COMPLETED


@event
class Failed(Ended):
    kind: ClassVar[str] = FAILED


@event
class Stopped(Ended):
    kind: ClassVar[str] = STOPPED


@event
class Started(BackfillEvent):
    kind: ClassVar[str] = STARTED
    concurrency: int | None = None  # used for the estimated finish


@event
class Resumed(BackfillEvent):
    kind: ClassVar[str] = RESUMED
    stopped_by: str | None = None


@event
class CanaryPaused(BackfillEvent):
    kind: ClassVar[str] = CANARY_PAUSED
    canary: int | None = None
    succeeded: int | None = None


@event
class CanaryApproved(BackfillEvent):
    kind: ClassVar[str] = CANARY_APPROVED


@event
class StopRequested(BackfillEvent):
    kind: ClassVar[str] = STOP_REQUESTED
    cancel_run: bool | None = None


@event
class WindowAccepted(WindowEvent):
    """A supervisor cleared a blocked-partial window (a gate, but about one window)."""

    kind: ClassVar[str] = WINDOW_ACCEPTED
    note: str | None = None
    accept: str | None = None
    decision: str | None = None


@event
class WindowSkipped(WindowEvent):
    kind: ClassVar[str] = WINDOW_SKIPPED
    decision: str | None = None


@event
class WindowChecked(WindowEvent):
    kind: ClassVar[str] = WINDOW_CHECKED
    decision: str | None = None


@event
class WindowIntent(WindowEvent):
    """Written BEFORE createRun with the exact parameters; ``intent_at`` is when it was meant."""

    kind: ClassVar[str] = WINDOW_INTENT
    mode: str | None = None
    attempt: int | None = None
    reference_run_id: str | None = None
    previous_run_id: str | None = None
    intent_at: str | None = None


@event
class WindowCreated(WindowEvent):
    kind: ClassVar[str] = WINDOW_CREATED
    attempt: int | None = None


@event
class WindowAdopted(WindowEvent):
    kind: ClassVar[str] = WINDOW_ADOPTED
    attempt: int | None = None


@event
class WindowCreateFailed(WindowEvent):
    kind: ClassVar[str] = WINDOW_CREATE_FAILED


@event
class WindowStatus(WindowEvent):
    kind: ClassVar[str] = WINDOW_STATUS


@event
class WindowFinished(WindowEvent):
    """How the run ended: ADF's ``durationInMs`` and the failing activity when it failed."""

    kind: ClassVar[str] = WINDOW_FINISHED
    duration_ms: int | float | None = None
    state: str | None = None  # the window state when no ADF status says it
    run_start: str | None = None
    run_end: str | None = None
    failed_activity: str | None = None
    activity_type: str | None = None
    error_code: str | None = None
    error: str | None = None
    activity_error: str | None = None


@event
class WindowNeedsOperator(WindowEvent):
    kind: ClassVar[str] = WINDOW_NEEDS_OPERATOR


@event
class WindowCancelled(WindowEvent):
    kind: ClassVar[str] = WINDOW_CANCELLED


@event
class Unknown(Event):
    """A kind this version does not know (a newer writer's): kept whole in ``extra``."""

    name: str = ""


@event
class RunEvent(Event):
    """An event about one pipeline run (``runs cancel``): which run, of which pipeline and factory."""

    run_id: str | None = None
    pipeline: str | None = None
    factory: str | None = None
    status: str | None = None


@event
class RunCancelRequested(RunEvent):
    """The guarded cancel's evidence, recorded before the cancel is sent."""

    kind: ClassVar[str] = RUN_CANCEL_REQUESTED
    reason: str | None = None
    match_on: list[Any] | None = None
    window: str | None = None
    force: bool | None = None
    elapsed_ms: int | None = None
    usual_ms: int | None = None


@event
class RunCancelled(RunEvent):
    """ADF confirmed ``Cancelled`` after ``waited_ms``."""

    kind: ClassVar[str] = RUN_CANCELLED
    waited_ms: int | None = None


@event
class RunsExported(Event):
    """Who exported which range of runs, and how many from where; never the runs."""

    kind: ClassVar[str] = RUNS_EXPORTED
    factory: str | None = None
    since: str | None = None
    until: str | None = None
    pipeline: str | None = None
    runs: int | None = None


BACKFILL_TYPES: Final[tuple[type[BackfillEvent], ...]] = (
    Requested,
    Approved,
    Rejected,
    Expired,
    Started,
    CanaryPaused,
    CanaryApproved,
    StopRequested,
    Completed,
    Failed,
    Stopped,
    Resumed,
)
WINDOW_TYPES: Final[tuple[type[WindowEvent], ...]] = (
    WindowAccepted,
    WindowSkipped,
    WindowChecked,
    WindowIntent,
    WindowCreated,
    WindowAdopted,
    WindowCreateFailed,
    WindowStatus,
    WindowFinished,
    WindowNeedsOperator,
    WindowCancelled,
)
RUN_TYPES: Final[tuple[type[Event], ...]] = (RunCancelRequested, RunCancelled, RunsExported)
# The one registry: kind -> type.
REGISTRY: Final[Mapping[str, type[Event]]] = {t.kind: t for t in (*BACKFILL_TYPES, *WINDOW_TYPES, *RUN_TYPES)}
BACKFILL_KINDS: Final = (
    REQUESTED,
    APPROVED,
    REJECTED,
    EXPIRED,
    STARTED,
    CANARY_PAUSED,
    CANARY_APPROVED,
    WINDOW_ACCEPTED,
    STOP_REQUESTED,
    COMPLETED,
    FAILED,
    STOPPED,
    RESUMED,
)
WINDOW_KINDS: Final = (
    WINDOW_SKIPPED,
    WINDOW_CHECKED,
    WINDOW_INTENT,
    WINDOW_CREATED,
    WINDOW_ADOPTED,
    WINDOW_CREATE_FAILED,
    WINDOW_STATUS,
    WINDOW_FINISHED,
    WINDOW_NEEDS_OPERATOR,
    WINDOW_CANCELLED,
)
RUN_KINDS: Final = (RUN_CANCEL_REQUESTED, RUN_CANCELLED, RUNS_EXPORTED)
ALL_KINDS: Final = BACKFILL_KINDS + WINDOW_KINDS + RUN_KINDS
ENDS: Final[tuple[type[Ended], ...]] = (Completed, Failed, Stopped)


def _accepted(hint: Any) -> tuple[type, ...]:
    """The runtime types a field's annotation admits (``str | None`` -> ``(str,)``)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    accepted: list[type] = []
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is Mapping:
            origin = dict
        if isinstance(origin, type) and origin is not type(None):
            accepted.append(origin)
    return tuple(accepted)


_FIELDS: dict[type[Event], Mapping[str, tuple[type, ...]]] = {}


# The names the fields' annotations use, as ``_accepted`` resolves them (None: admits nothing).
_RUNTIME: Mapping[str, type | None] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "list": list,
    "dict": dict,
    "Mapping": dict,
    "None": None,
}


def _accepted_text(annotation: str) -> tuple[type, ...] | None:
    """``_accepted`` of an annotation as written (``"Mapping[str, Any] | None"``) without
    evaluating it; None for a form it does not know. ``typing.get_type_hints`` evaluates every
    annotation of a type: most of the first ``status`` read of a ledger (issue 14)."""
    accepted: list[type] = []
    for option in annotation.split("|"):
        head, _, rest = option.strip().partition("[")
        if "[" in rest or head not in _RUNTIME:
            return None
        runtime = _RUNTIME[head]
        if runtime is not None:
            accepted.append(runtime)
    return tuple(accepted)


def _fields(cls: type[Event]) -> Mapping[str, tuple[type, ...]]:
    """A type's payload fields and the types each admits (resolved once per type: the fold
    decodes every event it reads)."""
    known = _FIELDS.get(cls)
    if known is None:
        specs = [f for f in fields(cls) if f.name != "extra"]
        read = {f.name: _accepted_text(f.type) if isinstance(f.type, str) else None for f in specs}
        if any(accepted is None for accepted in read.values()):
            hints = typing.get_type_hints(cls)
            read = {f.name: _accepted(hints[f.name]) for f in specs}
        known = _FIELDS[cls] = typing.cast(dict[str, tuple[type, ...]], read)
    return known


def decode(kind: str, payload: Mapping[str, Any]) -> Event:
    """The typed value of one stored ``(kind, payload)``; never raises on an old or odd payload."""
    cls = REGISTRY.get(kind)
    if cls is None:
        return Unknown(name=kind, extra=dict(payload))
    known = _fields(cls)
    typed: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in payload.items():
        accepted = known.get(name)
        # A field takes a value of its type; JSON true is not a count or a duration (bool is an
        # int to isinstance), so a bool fits only a field that says bool.
        if accepted is not None and isinstance(value, accepted) and (value.__class__ is not bool or bool in accepted):
            typed[name] = value
        else:
            extra[name] = value
    # As pickle does: the fields a payload lacks keep their class-level defaults (all None), so a
    # decode sets only what is there; the runner and every status read decode each event they fold.
    event = object.__new__(cls)
    event.__dict__.update(typed, extra=extra)
    return event


def encode(event: Event) -> tuple[str, dict[str, Any]]:
    """The ``(kind, payload)`` the ledger stores for ``event``: its set fields and its extras."""
    if isinstance(event, Unknown):
        return event.name, dict(event.extra)
    payload = {name: getattr(event, name) for name in _fields(type(event)) if getattr(event, name) is not None}
    return event.kind, {**payload, **event.extra}
