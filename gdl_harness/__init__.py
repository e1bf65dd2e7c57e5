"""Throwaway Salt masters, minions and local clouds, and a client of what they serve.

The one home of the harness shared by the tests (``tests/``) and the benchmarks
(``bench/``): ``salt_daemons`` runs real salt-master and salt-minion daemons in
temporary roots, ``local_cloud`` puts a master on a private bridge of its own
for local hosts, and ``poller`` asks a URL over and over, timing every request.
It runs gdl from the source tree it is installed from (``pip install -e``):
the masters it starts serve that tree's states, pillar, apps and cloud configs.
"""
