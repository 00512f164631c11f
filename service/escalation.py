"""Escalations: an incident raised to a recipient's ``min_severity`` after its start is told to that recipient once.

Webhook endpoints (``service/webhooks.py``) and e-mail recipients (``service/email_alerts.py``) filter each stored
phase of an incident by phase (for mail, ``start`` only by default) and ``min_severity``. An incident's severity can
rise while it is open (a fire that grows: ``vision/rules.py`` only ever raises it), so an incident that starts at
``medium`` and is raised to ``high`` by an update would never reach a duty officer who takes ``high`` starts: the most
important incidents would be the ones not told. :class:`EscalationMemory` remembers, per recipient, the open incidents
it saw below its ``min_severity`` (with the severity last seen); the first later phase that reaches it is sent as if
it were the start, marked as an escalation (from that severity). An incident sent at its start is never remembered,
so it is not sent again by this rule (later phases go only where the recipient takes them anyway). An incident whose
earlier phases this process never saw (one a crash left open, ended at the next start) is never an escalation.

The memory is bounded: an incident leaves it when it ends or escalates, and beyond ``max_incidents`` open ones the
longest unheard-of is forgotten (counted and logged; its escalation, if any, would then not be told).
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass

from seawatch.vision.events import severity_rank

log = logging.getLogger(__name__)

INCIDENTS_MAX = 10_000  # open incidents below a recipient's min_severity remembered per recipient


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a phase goes to a recipient, and when it goes as an escalation, the severity it was raised from."""

    send: bool
    escalated_from: str | None = None  # not None: the first phase told of an incident raised from this severity


NOT_SENT = Verdict(False)
SENT = Verdict(True)


class EscalationMemory:
    """One recipient's open incidents seen below its ``min_severity`` (see the module docstring). Thread-safe."""

    def __init__(self, name: str, max_incidents: int = INCIDENTS_MAX) -> None:
        self.name = name  # the recipient, for the log
        self.max_incidents = max_incidents
        self._below: collections.OrderedDict[str, str] = collections.OrderedDict()  # incident id -> severity last seen
        self._lock = threading.Lock()
        self.escalated = 0  # phases told as escalations
        self.forgotten = 0  # incidents dropped from a full memory

    def decide(self, incident_id: str, phase: str, severity: str, *, phases: tuple[str, ...],
               min_severity: str) -> Verdict:
        """The verdict on one stored phase that passed the recipient's other filters (type, source, snoozed).

        ``phases`` and ``min_severity`` are the recipient's; a severity that is not one of ours is never sent."""
        try:
            reached = severity_rank(severity) >= severity_rank(min_severity)
        except ValueError:
            return NOT_SENT
        plain = SENT if reached and phase in phases else NOT_SENT
        if "start" not in phases or not incident_id:  # a recipient that takes no starts is told no escalations
            return plain
        with self._lock:
            before = self._below.pop(incident_id, None)
            if before is not None and reached:  # seen below, reaches it now: once, as the start it never had
                self.escalated += 1
                return Verdict(True, before)
            if not reached and phase != "end":
                self._below[incident_id] = severity
                forgot = 0
                while len(self._below) > self.max_incidents:
                    self._below.popitem(last=False)
                    forgot += 1
                self.forgotten += forgot
            else:
                forgot = 0
        if forgot:
            log.warning("%s: more than %d open incidents below its min_severity; the oldest forgotten (%d so far): "
                        "should it be raised, it is not told", self.name, self.max_incidents, self.forgotten)
        return plain

    def __len__(self) -> int:
        with self._lock:
            return len(self._below)
