"""The operations layer: every change and read the API, the console and triggers make.

One module per resource (integrations, accounts, clients, applications, denylist,
deliveries, ingestion, health). Each operation is whole: it checks the caller's
permission (roles.py), validates what it is given, makes the change (one store call,
one transaction, the change's system notification included, see `Notices`), clears the
login cache and tells the dispatcher. Operations take a `Context` and plain values, and
raise tocsin.errors (never HTTP errors); api/errors.py maps those to statuses.
"""

from __future__ import annotations

from tocsin.app.context import Context, Notices, PrincipalCache, actor

__all__ = ["Context", "Notices", "PrincipalCache", "actor"]
