"""Checkers for notebook 06 (publishing a port): the DNAT rule that carries a client's
connection from the router's port 8081 to the container's port 80, and what the router's own
connections (to its own address, and to 127.0.0.1) need on top: hairpin NAT.

Both run the learner's cell in a scratch network namespace of its own (nothing reaches the
host's links, sysctls or iptables tables), next to a world the checker built for it
(``port_demo.check_world``), then fetch the container's page once and read what happened to
that connection from the router's own counters (``iptables-save -c``) and settings: the first
missing piece on the packet's way is named, with the command that adds it.
"""

from labkit.lab.checks.nb06 import dnat, localhost

__all__ = ["dnat", "localhost"]
