"""labkit: a container runtime built one kernel primitive at a time, for learning.

Layers, bottom up (lower layers never import higher ones):

* ``labkit.kernel``  - kernel primitives: syscalls, rootfs, namespaces (one module each)
* ``labkit.images``  - services: base images built offline
* ``labkit.runtime`` - container lifecycle: the helper process and its supervisor
* front ends         - ``labkit.cli``, ``labkit.doctor``, ``labkit.reset``, ``labkit.lab``
"""

__version__ = "0.1.0"
