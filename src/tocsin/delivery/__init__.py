"""Delivery: the dispatcher loop, the HTTP sender, the target guard, signing and TLS."""

from __future__ import annotations

from tocsin.delivery.sender import Sender
from tocsin.delivery.worker import Dispatcher

__all__ = ["Dispatcher", "Sender"]
