"""One mechanism for every stateful object: a transition table, a row lock, an append-only event row.

Runs, dataset registrations and profiles, system checks (and next approval requests and deployments) each declare a
`StateMachine`: for every action, the states it may leave from, the state it enters and the permission it needs.
`StateMachine.apply` is the only way their status changes: under `select_for_update`, in one transaction with the
event row. Work that one worker must do alone is taken with `claim`, a conditional update that counts rows and
bumps the row's `attempt`; a worker's later writes carry its attempt, so a worker whose lease expired (and whose work
another worker took over) cannot overwrite the outcome.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connections, models, transaction
from django.db.models import F, Q
from django.utils import timezone

from controlplane import permissions

log = logging.getLogger(__name__)


def _infrastructure_errors() -> tuple[type[BaseException], ...]:
    import kombu.exceptions
    import redis.exceptions
    from django import db

    return (
        db.OperationalError,
        db.InterfaceError,
        kombu.exceptions.OperationalError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        ConnectionError,
        TimeoutError,
    )


# The database, the broker or the network failed, not the work: a task retries on these and never records them as
# the outcome (a run is not failed because the database restarted).
INFRASTRUCTURE_ERRORS = _infrastructure_errors()


def retry_backoff(task: Any, cap: int = 300) -> int:
    """Seconds before a task's next retry: 5, 10, 20, … up to `cap`."""
    return int(min(2**task.request.retries * 5, cap))


TAKEOVER_REASON = "taken over: the previous worker's lease expired"


class IllegalTransition(ValidationError):
    """The object is not in a state the action may leave from: HTTP 409 in the API (a state conflict, not a bad
    field), with the field check's body (`fields` names the status and the states allowed)."""

    http_status = 409  # read by controlplane.api_support.exception_handler


class LostLease(Exception):
    """Another worker took this work over (this one's lease expired): it must stop without writing an outcome."""


@dataclass(frozen=True)
class Transition:
    sources: frozenset[str]
    target: str
    # The action in controlplane.permissions a user needs; None: only the system (a worker) makes it.
    permission: str | None = None


def transitions(
    table: Mapping[str, tuple[set[str] | frozenset[str], str] | tuple[set[str] | frozenset[str], str, str]],
) -> dict[str, Transition]:
    """`{"start": ({"queued"}, "starting"), "stop": ({"running"}, "stopping", "run.stop")}` as Transitions."""
    return {
        action: Transition(frozenset(row[0]), row[1], row[2] if len(row) > 2 else None)  # type: ignore[misc]
        for action, row in table.items()
    }


EventWriter = Callable[[Any, str, str, str, Any, str, "int | None"], None]


def write_transition_event(
    obj: Any, action: str, previous: str, target: str, actor: Any, reason: str, attempt: int | None
) -> None:
    """The event row for objects without a table of their own: controlplane.TransitionEvent."""
    from controlplane.models import TransitionEvent

    TransitionEvent.objects.create(
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk),
        action=action,
        from_status=previous,
        to_status=target,
        reason=reason[:2000],
        actor=actor,
        attempt=attempt,
    )


@dataclass(frozen=True)
class StateMachine:
    """The transition table of one model, and how its event rows are written."""

    model: type[models.Model]
    table: dict[str, Transition]
    # States that end the object's life: `finished_at` is set on entering them.
    terminal: frozenset[str]
    write_event: EventWriter = write_transition_event
    # Field set to now on entering a state (e.g. {"starting": "started_at"}), besides finished_at for terminal ones.
    timestamps: Mapping[str, str] = field(default_factory=dict)
    status_field: str = "status"

    def allowed(self, action: str) -> Transition:
        try:
            return self.table[action]
        except KeyError:
            raise KeyError(f"{self.model.__name__} has no transition {action!r}") from None

    def apply(
        self,
        pk: Any,
        action: str,
        *,
        actor: Any = None,
        reason: str = "",
        attempt: int | None = None,
        quiet: bool = False,
        under_lock: Callable[[Any], dict[str, Any] | None] | None = None,
        **fields: Any,
    ) -> Any:
        """Make `action` on the row `pk` under its lock, with its event row; return the updated object.

        A state the action may not leave from raises IllegalTransition, or with `quiet` returns None (a worker that
        lost a race returns quietly). With `attempt`, the row must still carry that attempt: otherwise LostLease, or
        None with `quiet`. `under_lock(obj)` runs under the lock before anything changes: it may raise to refuse, or
        return more fields computed from the locked row (e.g. metrics merged with what other polls stored).
        Only the fields named are written, so a writer that does not lock the row cannot lose an update here.
        """
        transition = self.allowed(action)
        if transition.permission is not None and actor is not None:
            permissions.require(actor, transition.permission)
        with transaction.atomic():
            obj = self.model._default_manager.select_for_update().get(pk=pk)
            previous = getattr(obj, self.status_field)
            if attempt is not None and obj.attempt != attempt:  # type: ignore[attr-defined]
                if quiet:
                    return None
                raise LostLease(f"{obj} was taken over by another worker (attempt {obj.attempt}, not {attempt})")  # type: ignore[attr-defined]
            if previous not in transition.sources:
                if quiet:
                    return None
                allowed = ", ".join(sorted(transition.sources))
                raise IllegalTransition(
                    {
                        self.status_field: [
                            f"a {previous} {self.model._meta.verbose_name} cannot {action} (allowed from: {allowed})"
                        ]
                    }
                )
            if under_lock is not None:
                fields = {**fields, **(under_lock(obj) or {})}
            now = timezone.now()
            changed = {self.status_field: transition.target, **fields}
            stamp = self.timestamps.get(transition.target)
            if stamp:
                changed[stamp] = now
            if transition.target in self.terminal and hasattr(obj, "finished_at"):
                changed["finished_at"] = now
            for name, value in changed.items():
                setattr(obj, name, value)
            obj.save(update_fields=list(changed))
            self.write_event(obj, action, previous, transition.target, actor, reason, attempt)
        return obj

    # --- leases -------------------------------------------------------------------------------------------------

    def claim(
        self,
        pk: Any,
        action: str,
        *,
        lease_seconds: float | None = None,
        reason: str = "",
        where: Q | None = None,
        **update: Any,
    ) -> int | None:
        """Take the row for work, alone: move it along `action` when it is in one of the action's sources, or take it
        over when it is already in the action's target but its holder's lease expired (the worker died).

        `where` narrows the rows that may be taken (e.g. a run whose job does not exist yet). Returns this worker's
        attempt number, or None when another worker has it ("another worker got there first").
        """
        transition = self.allowed(action)
        now = timezone.now()
        expired = now - timedelta(seconds=lease_seconds if lease_seconds is not None else default_lease_seconds())
        status = self.status_field
        takeover = Q(**{status: transition.target}) & (Q(claimed_at__lt=expired) | Q(claimed_at__isnull=True))
        with transaction.atomic():
            rows = self.model._default_manager.filter(pk=pk).filter(
                Q(**{f"{status}__in": transition.sources}) | takeover
            )
            if where is not None:
                rows = rows.filter(where)
            found = rows.values_list(status, "claimed_at").first()
            if found is None:
                return None
            previous, held_since = found
            fields = {status: transition.target, "claimed_at": now, "attempt": F("attempt") + 1, **update}
            stamp = self.timestamps.get(transition.target)
            if stamp and previous != transition.target:
                fields[stamp] = now
            # The same conditions again in the UPDATE: its row count, not the read above, decides who won.
            if rows.update(**fields) != 1:
                return None
            obj = self.model._default_manager.get(pk=pk)
            attempt = int(obj.attempt)  # type: ignore[attr-defined]
            if previous != transition.target:
                why = reason
            elif held_since is not None:
                why = TAKEOVER_REASON  # its worker stopped renewing: presumed dead
            else:
                why = "taken again after a retry"
            self.write_event(obj, action, previous, transition.target, None, why, attempt)
        return attempt

    def lease(self, pk: Any, *, where: Q, lease_seconds: float | None = None) -> int | None:
        """Take work on the row that changes no state (e.g. finishing a run): alone, while no live lease holds it.
        Returns this worker's attempt, or None when another worker holds it."""
        now = timezone.now()
        expired = now - timedelta(seconds=lease_seconds if lease_seconds is not None else default_lease_seconds())
        with transaction.atomic():
            taken = (
                self.model._default_manager.filter(pk=pk)
                .filter(where)
                .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=expired))
                .update(claimed_at=now, attempt=F("attempt") + 1)
            )
            if taken != 1:
                return None
            return int(self.model._default_manager.values_list("attempt", flat=True).get(pk=pk))

    def release(self, pk: Any, attempt: int) -> None:
        """Give the work back at once (the task will retry): the next attempt need not wait for the lease to expire.
        Stamps `enqueued_at`, since a retry is on its way: the sweep waits a lease before sending another."""
        self.model._default_manager.filter(pk=pk, attempt=attempt).update(claimed_at=None, enqueued_at=timezone.now())

    @contextmanager
    def holding(self, pk: Any, attempt: int, *, every: float) -> Iterator[None]:
        """Renew this worker's lease every `every` seconds while a slow step (a download, an upload) runs, from a
        thread with its own database connection; a lease lost meanwhile shows at the worker's next write."""
        stop = threading.Event()

        def beat() -> None:
            try:
                while not stop.wait(every):
                    if not self.model._default_manager.filter(pk=pk, attempt=attempt).update(claimed_at=timezone.now()):
                        return
            except Exception:  # a renewal that fails must not kill the step; the lease just runs out
                log.warning("renewing the lease of %s %s failed", self.model.__name__, pk, exc_info=True)
            finally:
                connections.close_all()

        thread = threading.Thread(target=beat, name=f"lease-{self.model.__name__}-{pk}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    # --- poll chains: one chain of short polls per object (poll_generation, poll_tick, last_polled_at) ------------

    def new_poll_chain(self, pk: Any) -> int:
        """Retire the object's poll chain and return the next chain's generation; call it inside a transaction,
        and send the chain's first poll on commit. The generation is raised under the row lock, so two restarts
        never share one."""
        locked = self.model._default_manager.select_for_update().only("pk", "poll_generation").get(pk=pk)
        generation = int(locked.poll_generation) + 1  # type: ignore[attr-defined]
        self.model._default_manager.filter(pk=pk).update(poll_generation=generation, poll_tick=0)
        return generation

    def take_poll_tick(self, pk: Any, generation: int | None, tick: int | None) -> bool:
        """Take the chain's ticket for this poll and stamp the heartbeat the sweeps judge a chain by. A replaced
        chain, or the second delivery of one message, gets False and must stop. No ticket (None): poll once."""
        rows = self.model._default_manager.filter(pk=pk)
        now = timezone.now()
        if generation is None:
            rows.update(last_polled_at=now)
            return True
        rows = rows.filter(poll_generation=generation)
        if tick is not None:
            rows = rows.filter(poll_tick=tick)
        return bool(rows.update(poll_tick=(tick or 0) + 1, last_polled_at=now))

    def renew(self, pk: Any, attempt: int) -> None:
        """Extend this worker's lease before slow I/O; LostLease when another worker has taken the work over."""
        if not self.model._default_manager.filter(pk=pk, attempt=attempt).update(claimed_at=timezone.now()):
            raise LostLease(f"{self.model.__name__} {pk}: attempt {attempt} was taken over by another worker")


def default_lease_seconds() -> float:
    # A task cannot outlive the hard time limit, so after it a claimed row has no live worker.
    return float(settings.CELERY_TASK_TIME_LIMIT) + 60
