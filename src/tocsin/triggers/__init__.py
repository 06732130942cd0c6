"""Triggers (SPEC 5): definitions, attack grouping, evaluation and notifications.

Every module here is pure (no I/O, time passed in): the trigger consumer feeds it stored
events and commits what it returns, with its state, in one transaction.
"""
