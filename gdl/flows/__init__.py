"""The runner's workflows, one module each, over the plain-Python core.

- :mod:`gdl.flows.build`: ``gdl.build`` and the steps ``orch/build.sls`` calls;
- :mod:`gdl.flows.destroy`: ``gdl.destroy`` and the steps of ``orch/destroy.sls``;
- :mod:`gdl.flows.status`: ``gdl.status`` and ``gdl.list``;
- :mod:`gdl.flows.deploy`: ``gdl.deploy`` and ``gdl.rollback``.

Each takes a :class:`gdl.flows.context.Context`: the master's settings, what only a
running master can do (:class:`~gdl.flows.context.SaltOps`) and where progress goes.
Flows import the core and :mod:`gdl.flows.context`; ``deploy`` and ``destroy`` use the
build's pillar step; nothing imports back.
"""
