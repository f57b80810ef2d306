"""The per-window state machine of ``backfill run`` (spec §7).

For one claimed window: re-run its checks (``window.checked``), write ``window.intent`` with the
exact public parameters BEFORE createRun, create the run with retries off (``window.created``),
poll it (``window.status`` on each change) and record how it ended (``window.finished``, with the
failing activity and its error; ``runner.follow``). After any doubt (an intent without a
created/adopted event, a createRun whose effect is unknown) it reconciles with history
(``runner.reconcile``) before it ever calls createRun again: it adopts the run it finds
(``window.adopted``), creates again only when history is definitive, and otherwise asks for an
operator (``window.needs-operator``).

Every step is a ledger event, read back by ``LedgerView`` (``runner.view``): the ledger alone says
where a window stands, so a runner killed at any point resumes from it. The machine works through
its ports (``runner.ports``: ledger, claims, clock; the factory's protocol): never a store module.

Spec §14, at most one run per window across backfills: before anything that may send createRun,
the machine claims the window's identity (factory, pipeline, matched values; ``identity_key``),
whichever backfill holds it. Holding it, it re-reads the window's history (one query of what
changed since its last read) and re-runs its checks right before the intent; meeting an identity
another backfill holds, it re-reads history and skips the window (``skip-in-progress``,
``skip-succeeded``) or comes back to it later (``DEFERRED``). Right before createRun it confirms
that both claims are still its own; a 429 is waited out (``Retry-After``) and sent again.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from backfill import events as ev
from backfill import progress as pg
from backfill.backfills import intended_at
from backfill.checks.base import Check
from backfill.decisions import Decision, active_of, decide, describe_run
from backfill.errors import ConfigError, FactoryError
from backfill.factory.protocol import Factory
from backfill.factory.run import Run, RunStatus
from backfill.matching import Key, key_hash, latest_of, match_key
from backfill.preview import WindowDecision
from backfill.runner.follow import RunFollower, needs_operator
from backfill.runner.polling import PollPolicy
from backfill.runner.ports import DEFAULT_LEASE, Claim, ClaimsPort, Clock, Sleep
from backfill.runner.reconcile import DEFAULT_SETTLE, DEFAULT_SKEW, LOOKBACK, Reconciliation, candidates, reconcile
from backfill.runner.view import LedgerView
from backfill.secrets import reveal_all
from backfill.timeutil import format_utc, parse_duration, utcnow
from backfill.windows import Window

# What ``WindowMachine.process`` returns for a window another backfill holds with no run in its
# history yet: not an end, the pool comes back to it.
DEFERRED = "deferred"
# Separates the worker from the backfill ID in an identity claim's worker column.
BACKFILL_MARK = "|"
# The backfill_id of identity claims: no backfill ID has this form (they are bf-...).
IDENTITY_SCOPE = "@window-identity"


def identity_key(factory_key: str, pipeline: str, fields: Sequence[str], canonical: str) -> str:
    """The window_key of an identity claim: sha256 of the factory, the pipeline (ADF names are
    case-insensitive), the matched fields and their values' canonical text (``matching.key_hash``)."""
    text = json.dumps([factory_key.lower(), pipeline.lower(), sorted(fields), canonical], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_RESOLVING = frozenset(
    {ev.WINDOW_CREATED, ev.WINDOW_ADOPTED, ev.WINDOW_CREATE_FAILED, ev.WINDOW_FINISHED, ev.WINDOW_SKIPPED}
)


@dataclass(frozen=True)
class RunnerOptions:
    """Timing knobs; ``from_env`` reads ``BACKFILL_RECONCILE_SETTLE`` and ``BACKFILL_CLAIM_LEASE``."""

    settle: timedelta = DEFAULT_SETTLE
    skew: timedelta = DEFAULT_SKEW
    lease: timedelta = DEFAULT_LEASE
    max_poll_errors: int = 5
    # Intents one runner process may write for a window (each after a reconciliation found no
    # run) before it leaves the window to an operator; a new `backfill run` gets as many again.
    max_intents: int = 3
    # How long a claim confirmed by the database is trusted before createRun without asking again.
    fresh: timedelta = timedelta(seconds=3)
    # 429s on one createRun waited out before the window is left to an operator, and the longest
    # Retry-After obeyed.
    throttle_waits: int = 5
    max_retry_after: timedelta = timedelta(minutes=5)
    # After a 4xx refusal, how long history is searched (a 4xx after effect) before create-failed.
    refusal_settle: timedelta = timedelta(minutes=1)
    # How long a window another backfill holds is left before it is looked at again.
    defer: timedelta = timedelta(seconds=1)

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, settle: timedelta | None = None) -> RunnerOptions:
        """``settle`` is the plan's ``[execution] settle``; the environment variable wins (tests)."""
        return cls(
            settle=_duration_setting(env, "BACKFILL_RECONCILE_SETTLE", settle or DEFAULT_SETTLE),
            lease=_duration_setting(env, "BACKFILL_CLAIM_LEASE", DEFAULT_LEASE),
        )


def _duration_setting(env: Mapping[str, str], name: str, default: timedelta) -> timedelta:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return parse_duration(text, name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


@dataclass(frozen=True)
class Job:
    """One window to run and what the recomputed preview said about it."""

    window: Window
    decision: WindowDecision
    accepted: bool = False


@dataclass
class WindowMachine:
    """Runs one claimed window to its end, or to the point where an operator must decide."""

    view: LedgerView
    factory: Factory
    claims: ClaimsPort
    pipeline: str
    match_fields: Sequence[str]
    checks: Sequence[Check]
    horizon: datetime | None
    mode: str = "new-run"
    run_timeout: timedelta | None = None
    on_timeout: str = "report"
    poll: PollPolicy = field(default_factory=PollPolicy)
    options: RunnerOptions = field(default_factory=RunnerOptions)
    clock: Clock = utcnow
    sleep: Sleep = time.sleep
    durations: list[timedelta] = field(default_factory=list)
    intents: Counter[str] = field(default_factory=Counter)
    # Where the re-read before createRun starts: when this process synced history.
    history_since: datetime | None = None
    _runs_by_key: dict[Key, dict[str, Run]] = field(default_factory=dict)
    _read_until: datetime | None = None
    _read_lock: threading.Lock = field(default_factory=threading.Lock)
    _identities: dict[str, Claim] = field(default_factory=dict)
    _identity_claims: ClaimsPort | None = None
    follower: RunFollower = field(init=False)
    # Other backfills' intents not followed by a created/adopted/final event, per window key, as
    # read from their ledger events (backfill ID -> (last seq read, pending)).
    _foreign: dict[str, tuple[int, dict[str, tuple[datetime, Mapping[str, Any]]]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Follows this machine's runs to their end, learning durations into ``durations``.
        self.follower = RunFollower(
            view=self.view,
            factory=self.factory,
            poll=self.poll,
            run_timeout=self.run_timeout,
            on_timeout=self.on_timeout,
            max_poll_errors=self.options.max_poll_errors,
            clock=self.clock,
            sleep=self.sleep,
            durations=self.durations,
        )

    @property
    def identity_claims(self) -> ClaimsPort:
        """Identity claims carry this backfill's ID in their worker, so that another backfill
        meeting the window knows whose ledger may hold a createRun in doubt for it."""
        if self._identity_claims is None:
            self._identity_claims = self.claims.as_worker(f"{self.claims.worker}{BACKFILL_MARK}{self.view.backfill_id}")
        return self._identity_claims

    def renew_identities(self) -> None:
        """Renew the identity claims held now (the pool's heartbeat calls this)."""
        with self._read_lock:
            held = list(self._identities.values())
        for claim in held:
            self.identity_claims.renew(claim)

    def process(self, job: Job, claim: Claim) -> str:
        """Drive ``job`` from wherever the ledger says it stands; return its window state."""
        key = job.window.key
        self.view.refresh()
        state = self.view.window(key)
        if key in self.view.closed:
            return state["state"]
        pending = self.view.pending.get(key)
        if pending is None and state["run_id"]:
            return self._follow(job, state["run_id"], state["started_at"] or self.clock())
        if pending is None and state["state"] == pg.WindowState.FAILED:
            # createRun was refused; the runner died before recording the end
            self.view.append(ev.WINDOW_FINISHED, {"status": RunStatus.FAILED.value, "message": state["reason"]}, key)
            return pg.WindowState.FAILED
        # From here on a createRun may be sent: the window's identity must be ours (spec §14).
        identity = self._claim_identity(job)
        if identity is None:
            return self._met_claimed(job)
        try:
            foreign = self._foreign_doubt(job)
            if foreign is not None:
                return foreign
            if pending is not None:
                return self._after_doubt(job, claim, pending, "an intent without a created or adopted event")
            return self._start(job, claim, {})
        finally:
            with self._read_lock:
                self._identities.pop(key, None)
            self.identity_claims.release(identity)

    # --- the window's identity and its fresh history --------------------------------------------

    def _identity(self, window: Window) -> str | None:
        keyed = key_hash(window.parameters, self.match_fields)
        if keyed is None:
            return None
        return identity_key(self.factory.ref.key, self.pipeline, self.match_fields, keyed[0])

    def _claim_identity(self, job: Job) -> Claim | None:
        identity = self._identity(job.window)
        if identity is None:
            # Nothing to match on (no matched values): nothing another backfill could share.
            return Claim(IDENTITY_SCOPE, "", 0, self.identity_claims.worker, self.clock() + self.options.lease)
        self.identity_claims.seed(IDENTITY_SCOPE, [identity])
        held = self.identity_claims.claim(IDENTITY_SCOPE, [identity])
        if held is not None:
            with self._read_lock:
                self._identities[job.window.key] = held
        return held

    def _window_runs(self, window: Window) -> list[Run]:
        """The window's runs that changed since this process last asked (one query of the
        pipeline's runs updated since then), merged with what it learnt before."""
        want = match_key(window.parameters, self.match_fields)
        with self._read_lock:
            now = self.clock()
            since = (self._read_until or self.history_since or now) - LOOKBACK
            runs = self.factory.query_runs(
                updated_after=since, updated_before=now + self.options.skew, pipeline=self.pipeline
            )
            for run in runs:
                run_key = match_key(run.parameters, self.match_fields)
                if run_key is not None:
                    self._runs_by_key.setdefault(run_key, {})[run.run_id] = run
            self._read_until = now
            return list(self._runs_by_key.get(want, {}).values()) if want is not None else []

    def _history(self, job: Job, runs: Sequence[Run]) -> tuple[Run | None, Run | None]:
        """(latest, in flight) of the window from the preview's runs and the fresh ones."""
        known: dict[str, Run] = {}
        for run in (job.decision.latest_run, job.decision.active_run):
            if run is not None:
                known[run.run_id] = run
        known.update({run.run_id: run for run in runs})
        everything = list(known.values())
        return latest_of(everything), active_of(everything)

    def _foreign_doubt(self, job: Job) -> str | None:
        """Another backfill that held this window may have left a createRun in doubt (killed, or
        handed to an operator): search history for it as for our own doubt, for ``settle`` from
        its intent, before anything is created here. None: nothing stands in the way."""
        identity = self._identity(job.window)
        if identity is None:
            return None
        key = job.window.key
        holders = self.identity_claims.holders(IDENTITY_SCOPE, identity)
        others = {w.rpartition(BACKFILL_MARK)[2] for w in holders if BACKFILL_MARK in w} - {self.view.backfill_id}
        for other in sorted(others):
            pending = self._foreign_pending(other).get(key)
            if pending is None:
                continue
            at, payload = pending
            _, result = self._reconcile_intent(job, at, payload, self.options.settle)
            why = f"backfill {other} left a createRun in doubt for this window"
            if result.ambiguous:
                return self._operator(key, f"{why}; history could not tell whether the run exists", result.evidence)
            if result.run is not None:
                run = result.run
                active = run if run.status.is_active else None
                skipped = self._skip_for(key, run, active, why)
                if skipped is not None:
                    return skipped
        return None

    def _foreign_pending(self, backfill_id: str) -> dict[str, tuple[datetime, Mapping[str, Any]]]:
        with self._read_lock:
            seq, pending = self._foreign.get(backfill_id, (0, {}))
            for event in self.view.ledger.events(
                backfill_id=backfill_id, after_seq=seq, kinds=[ev.WINDOW_INTENT, *_RESOLVING]
            ):
                if event.window_key:
                    if event.kind == ev.WINDOW_INTENT:
                        pending[event.window_key] = (event.at, event.payload)
                    else:
                        pending.pop(event.window_key, None)
                seq = event.seq
            self._foreign[backfill_id] = (seq, pending)
            return dict(pending)

    def _met_claimed(self, job: Job) -> str:
        """Another backfill holds the window's identity: skip it if history shows why, else later."""
        key = job.window.key
        if key in self.view.first_intent:
            return DEFERRED  # this backfill sent intents for it: its runs are ours to adopt, later
        try:
            runs = self._window_runs(job.window)
        except FactoryError:
            return DEFERRED
        latest, active = self._history(job, runs)
        skipped = self._skip_for(key, latest, active, "held by another backfill; history re-read")
        return skipped or DEFERRED

    def _skip_for(self, key: str, latest: Run | None, active: Run | None, why: str) -> str | None:
        if active is not None:
            decision, reason = Decision.SKIP_IN_PROGRESS, f"{describe_run(active)}; never start a second run"
            run = active
        elif latest is not None and latest.status is RunStatus.SUCCEEDED:
            decision, reason, run = Decision.SKIP_SUCCEEDED, describe_run(latest), latest
        else:
            return None
        self.view.append(
            ev.WINDOW_SKIPPED, {"decision": decision, "reason": f"{why}: {reason}", "run_id": run.run_id}, key
        )
        return pg.WindowState.SKIPPED

    # --- creating ------------------------------------------------------------------------------

    def _recheck(self, job: Job, latest: Run | None) -> tuple[Decision, str, list[dict[str, Any]]] | None:
        if not self.checks:
            return None
        results = [check.evaluate(job.window) for check in self.checks]
        decision, reason = decide(job.window, latest, results, horizon=self.horizon)
        return decision, reason, [r.to_json() for r in results]

    def _reread(self, job: Job) -> tuple[Run | None, Run | None] | str:
        """The window's latest and in-flight runs right before createRun, or why we cannot know."""
        try:
            runs = self._window_runs(job.window)
        except FactoryError as exc:
            identity = self._identity(job.window)
            since = self.history_since or self.clock()
            if identity is not None and self.identity_claims.others_since(IDENTITY_SCOPE, identity, since - LOOKBACK):
                return f"history could not be re-read before createRun ({exc}) and another worker held the window"
            # Nobody else held the window since our own history sync: what it said still holds.
            return self._history(job, [])
        return self._history(job, runs)

    def _start(self, job: Job, claim: Claim, doubt: Mapping[str, Any]) -> str:
        key, window = job.window.key, job.window
        seen = self._reread(job)
        if isinstance(seen, str):
            return self._operator(key, seen, doubt)
        latest, active = seen
        first = self.view.first_intent.get(key)
        if first is not None:
            # A run that started after this backfill's own intent is its own (a late effect).
            previous = job.decision.latest_run.run_id if job.decision.latest_run is not None else None
            ours = candidates(
                [r for r in (active, latest) if r is not None],
                window,
                self.match_fields,
                first,
                exclude=frozenset({previous}) if previous else frozenset(),
                skew=self.options.skew,
            )
            if ours:
                return self._adopt(job, claim, ours[0], "found right before createRun", dict(doubt), first)
        skipped = self._skip_for(key, latest, active, "history re-read right before createRun")
        if skipped is not None:
            return skipped
        checked = self._recheck(job, latest)
        if checked is not None:
            decision, reason, results = checked
            step = (ev.WINDOW_CHECKED, {"decision": decision, "reason": reason, "checks": results}, key)
            if decision is Decision.SKIP_COMPLETE_IN_SINK:
                self.view.append_many([step, (ev.WINDOW_SKIPPED, {"decision": decision, "reason": reason}, key)])
                return pg.WindowState.SKIPPED
            self.view.append(*step)
            if not (decision.runnable or (decision is Decision.BLOCKED_PARTIAL and job.accepted)):
                return pg.WindowState.BLOCKED
        if self.intents[key] >= self.options.max_intents:
            return self._operator(key, f"createRun was sent {self.intents[key]} times and no run appeared", doubt)
        # Secrets are read from the environment now, before the intent: a missing variable must
        # not leave an intent behind that looks like a createRun in doubt.
        parameters = reveal_all(window.parameters)
        recover = self.mode == "recover" and latest is not None and latest.status is RunStatus.FAILED
        reference = latest.run_id if recover and latest is not None else None
        if not self.claims.renew(claim):
            return pg.WindowState.PENDING  # another worker took the window over: leave it to them
        intent_at = self.clock()
        self.intents[key] += 1
        self.view.append(
            ev.WINDOW_INTENT,
            {
                "parameters": window.public_parameters(),
                "intent_at": format_utc(intent_at, precise=True),
                "mode": "recover" if recover else "new-run",
                "reference_run_id": reference,
                "previous_run_id": latest.run_id if latest is not None else None,
                "attempt": claim.attempt,
                "worker": claim.worker,
                **({"after_doubt": dict(doubt)} if doubt else {}),
            },
            key,
        )
        waits = 0
        while True:
            if not self._still_ours(job, claim):
                # Paused past the lease (or lost the window): the intent stays for whoever holds
                # the window now, which reconciles it before it creates anything.
                return pg.WindowState.PENDING
            try:
                run_id = self.factory.create_run(
                    self.pipeline,
                    parameters,
                    reference_run_id=reference,
                    is_recovery=True if recover else None,
                    start_from_failure=True if recover else None,
                )
            except FactoryError as exc:
                if exc.throttled and waits < self.options.throttle_waits:
                    # A 429 is refused before any effect: wait as told and send again.
                    waits += 1
                    wait = min(
                        timedelta(seconds=exc.retry_after if exc.retry_after is not None else 1.0),
                        self.options.max_retry_after,
                    )
                    self.sleep(wait.total_seconds())
                    continue
                if exc.effect_unknown:
                    return self._after_doubt(job, claim, self.view.pending[key], f"createRun in doubt: {exc}")
                return self._refused(job, claim, exc, waits)
            break
        self.view.append(
            ev.WINDOW_CREATED,
            {"run_id": run_id, "attempt": claim.attempt, **({"throttled": waits} if waits else {})},
            key,
        )
        return self._follow(job, run_id, intent_at)

    def _still_ours(self, job: Job, claim: Claim) -> bool:
        """Both claims (the backfill's window and its identity) provably held right now."""
        if not self.claims.confirm(claim, self.options.fresh):
            return False
        with self._read_lock:
            identity = self._identities.get(job.window.key)
        return identity is None or self.identity_claims.confirm(identity, self.options.fresh)

    def _refused(self, job: Job, claim: Claim, exc: FactoryError, waits: int) -> str:
        """A refusal (4xx): look at history first, since a 4xx may still follow an effect (a
        gateway's answer); record create-failed only when no run appeared."""
        key = job.window.key
        at, payload = self.view.pending[key]
        intent_at, result = self._reconcile_intent(
            job, at, payload, min(self.options.settle, self.options.refusal_settle)
        )
        if result.run is not None:
            return self._adopt(job, claim, result.run, f"createRun answered {exc}", result.evidence, intent_at)
        reason = f"createRun refused: {exc}" if not exc.throttled else f"createRun throttled {waits + 1} times: {exc}"
        if exc.throttled:
            # Never executed, but the service keeps refusing: an operator decides when to go on.
            return self._operator(key, reason, result.evidence)
        failure = {"reason": reason, "code": exc.code, "http_status": exc.status}
        finished = {"status": RunStatus.FAILED.value, "message": failure["reason"]}
        self.view.append_many([(ev.WINDOW_CREATE_FAILED, failure, key), (ev.WINDOW_FINISHED, finished, key)])
        return pg.WindowState.FAILED

    def _reconcile_intent(
        self, job: Job, at: datetime, payload: Mapping[str, Any], settle: timedelta
    ) -> tuple[datetime, Reconciliation]:
        """Search history for the run an intent (ours or another backfill's) may have created,
        for ``settle`` from the intent, leaving out the run it meant to replace."""
        intent = ev.decode(ev.WINDOW_INTENT, payload)
        intent_at = intended_at(intent, at) if isinstance(intent, ev.WindowIntent) else at
        previous = payload.get("previous_run_id")
        result = reconcile(
            self.factory,
            self.pipeline,
            job.window,
            self.match_fields,
            intent_at,
            exclude=frozenset({previous}) if isinstance(previous, str) else frozenset(),
            settle=settle,
            skew=self.options.skew,
            clock=self.clock,
            sleep=self.sleep,
        )
        return intent_at, result

    def _after_doubt(self, job: Job, claim: Claim, pending: tuple[datetime, Mapping[str, Any]], why: str) -> str:
        key = job.window.key
        at, payload = pending
        intent_at, result = self._reconcile_intent(job, at, payload, self.options.settle)
        evidence = {"doubt": why, "intent_at": format_utc(intent_at, precise=True), **result.evidence}
        if result.run is not None:
            return self._adopt(job, claim, result.run, why, evidence, intent_at)
        if result.ambiguous:
            return self._operator(key, f"{why}; history could not tell whether the run exists", evidence)
        return self._start(job, claim, evidence)

    def _adopt(
        self, job: Job, claim: Claim, run: Run, reason: str, evidence: Mapping[str, Any], since: datetime
    ) -> str:
        """Record ``run`` (found in history) as this window's run, then finish or follow it;
        ``since`` stands for its start while ADF has not reported one."""
        key = job.window.key
        self.view.append(
            ev.WINDOW_ADOPTED,
            {
                "run_id": run.run_id,
                "status": run.status_label,
                "attempt": claim.attempt,
                "reason": reason,
                "evidence": evidence,
            },
            key,
        )
        if run.status.is_final:
            return self._finish(key, run)
        return self._follow(job, run.run_id, run.start or since)

    def _operator(self, key: str, reason: str, evidence: Mapping[str, Any], run_id: str | None = None) -> str:
        return needs_operator(self.view, key, reason, evidence, run_id)

    def _follow(self, job: Job, run_id: str, started_at: datetime) -> str:
        return self.follower.follow(job.window.key, run_id, started_at)

    def _finish(self, key: str, run: Run) -> str:
        return self.follower.finish(key, run)
