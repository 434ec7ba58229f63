"""The face: the `recsys` command, one module per command group, and the narrated demo.

It sits above every part and is the only place that wires them together; nothing
imports it. Named `recsys_cli` so that it shadows no other distribution's import name.
"""
