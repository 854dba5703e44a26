"""The notification ledger as a journal fact, for controllers sharing one database.

Beside `reconciler.controller.notify.Ledger` (a file in the state directory), chosen by
`ledger_for`: a standby that takes over knows which alerts were sent, how often they
came back, and which still wait to be delivered.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from reconciler.controller.notify import Ledger, Post
from reconciler.execute.store import LEDGER_FACT, uses_database
from reconciler.execute.store_pg import PgJournal

if TYPE_CHECKING:
    from reconciler.settings import Settings


class FactLedger(Ledger):
    """`Ledger` loaded from and saved to a journal fact; its own connection (the
    scheduler's thread), opened on first use."""

    def __init__(self, settings: Settings, name: str) -> None:
        super().__init__(None)
        self._settings = settings
        self._name = name
        self._journal: PgJournal | None = None
        self._loaded = False

    def _store(self) -> PgJournal:
        if self._journal is None:
            self._journal = PgJournal.connect(self._settings)
        return self._journal

    def load(self) -> None:
        text = self._store().fact(self._name)
        self._loaded = True
        if not text:
            return
        try:
            data = json.loads(text)
            entries = data.get("alerts", data)  # before pending alerts: the entries alone
            self.entries = {k: v for k, v in entries.items() if "|" in k}
            self.pending = [Post.from_json(p) for p in data.get("pending", [])]
        except (ValueError, KeyError, TypeError, AttributeError):
            self.entries, self.pending = {}, []

    def decide(self, *args: Any, **kwargs: Any) -> Any:
        if not self._loaded:
            self.load()
        return super().decide(*args, **kwargs)

    def take_pending(self) -> list[Post]:
        if not self._loaded:
            self.load()
        return super().take_pending()

    def save(self) -> None:
        data = {"alerts": self.entries, "pending": [p.to_json() for p in self.pending]}
        self._store().set_fact(self._name, json.dumps(data, sort_keys=True))


def ledger_for(settings: Settings) -> Ledger | None:
    """The notification ledger kept in the database (None: the state directory's file)."""
    if not uses_database(settings):
        return None
    return FactLedger(settings, LEDGER_FACT)


__all__ = ["FactLedger", "ledger_for"]
