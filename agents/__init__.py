"""One module per agent process, found by ``sophia up`` rather than listed here.

Every public module of this package defines exactly one ``bus.Agent`` subclass, whose
``name`` is the program's name; adding ``agents/x.py`` is enough for ``sophia up`` to run
it (as ``python -m bus.runner agents.x``). A module whose name starts with ``_`` is a
helper, not an agent. See ``ops.stack.agent_modules``.
"""
