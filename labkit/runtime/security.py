"""Which defences a container gets: Docker's defaults, and Docker's flags to change them.

A default container, as under Docker, keeps 14 capabilities, runs under the default seccomp
filter, sees /proc and /sys with the dangerous parts masked or read-only, may open only the
device nodes every container gets, and has no_new_privs off. Each defence has Docker's flag
to turn it off on its own, which is how the escape gallery shows what each one stops:

    --cap-add ALL                         every capability
    --security-opt seccomp=unconfined     no seccomp filter
    --security-opt systempaths=unconfined nothing masked or read-only in /proc and /sys
    --device-cgroup-rule 'a *:* rwm'      every device may be opened
    --privileged                          all of the above, /sys writable, the host's devices
    --security-opt no-new-privileges      (on) setuid programs cannot gain privileges
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from labkit.errors import LabkitError
from labkit.kernel import capabilities
from labkit.kernel.cgroups import devices

if TYPE_CHECKING:
    from labkit.runtime.spec import ContainerSpec


class Security(NamedTuple):
    capabilities: frozenset[str]
    seccomp: bool  # Docker's default filter
    no_new_privs: bool
    masks: bool  # masked and read-only paths in /proc and /sys
    device_rules: tuple[devices.Rule, ...] | None  # None: no device control at all
    privileged: bool

    @classmethod
    def of(cls, spec: ContainerSpec) -> Security:
        caps = capabilities.resolve(spec.cap_add, spec.cap_drop, spec.privileged)
        seccomp, nnp, masks = not spec.privileged, False, not spec.privileged
        for option in spec.security_opt:
            key, _, value = option.replace(":", "=", 1).partition("=")
            if key == "seccomp" and value == "unconfined":
                seccomp = False
            elif key == "no-new-privileges" and value in ("", "true", "false"):
                nnp = value != "false"
            elif key == "systempaths" and value == "unconfined":
                masks = False
            else:
                raise LabkitError(
                    f"unsupported security option {option!r}",
                    fix="use seccomp=unconfined, systempaths=unconfined or no-new-privileges "
                    "with {security_opt}",
                )
        rules = tuple(devices.parse(r) for r in spec.device_cgroup_rules)
        device_rules = None if spec.privileged else (*devices.DOCKER_DEFAULT, *rules)
        return cls(caps, seccomp, nnp, masks, device_rules, spec.privileged)
