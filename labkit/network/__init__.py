"""Container networking as Docker's bridge driver does it: a Linux bridge per network, a veth
pair per container (one end on the bridge, the other, ``eth0``, inside the container's
network namespace), an address from the network's subnet, and iptables rules that let a
network's containers talk to each other and out to the world (masqueraded as the host) but
not to other networks.

The modules, in the order a container meets them: ``model`` (what a network and an
attachment are), ``store`` (network definitions), ``host`` (a network's bridge and rules,
made once: ``bridge`` and ``firewall``), ``ipam`` (address leases), ``files`` (/etc/hosts,
resolv.conf, hostname), ``attach`` (the runtime's entry points), ``cleanup`` (reset).
Published ports (``-p``): ``ports`` (specs, and the host sockets that hold them),
``portrules`` (their iptables rules), ``proxy`` and ``udprelay`` (the userland proxy, run by
the supervisor's loop).
pyroute2 is imported only where a bridge is made or removed, never when a container starts
on a network that exists already.
"""
