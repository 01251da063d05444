"""Checkers for notebook 05 (container networking): two namespaces joined by hand with a veth
pair, and a container's way out through a router that forwards and masquerades, as Docker's
host does for docker0.

Both run the learner's cell in a scratch network namespace of its own (nothing reaches the
host's links, sysctls or iptables tables), next to namespaces the checker made for it, then read
those namespaces with ``ip``, ``sysctl`` and ``iptables`` and ping across: the first missing
piece is named, with the command that adds it.
"""

from labkit.lab.checks.nb05 import masquerade, veth_pair

__all__ = ["masquerade", "veth_pair"]
