"""Operator tools: commands that work beside a tocsin rather than inside it.

`listen` (a receiver that prints what arrives), `report` (load events from a file into a
running tocsin) and `demo` (everything at once, on temporary files). Each command is a
click command of its own module; `tocsin.cli` adds them to the `tocsin` group.
"""
