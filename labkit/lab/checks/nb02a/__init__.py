"""Checkers for notebook 02a (namespaces): a hostname of its own by hand, the id maps of a user
namespace, and which namespace kind hides what.

Each checker runs the learner's answer in a fresh child process against the real kernel (new
namespaces, real id maps, real probes), in scratch namespaces where a mistake would otherwise
change the host.
"""

from labkit.lab.checks.nb02a import hostname, uid_map, which_kind

__all__ = ["hostname", "uid_map", "which_kind"]
