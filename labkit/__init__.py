"""labkit: a container runtime built one kernel primitive at a time, for learning.

The package is built in layers (``LAYERS`` below is the one list of them): a module may
import from its own layer and the layers below it, never from one above. A lab step adds a
kernel module (one primitive), maybe a service, a stage of the helper, and a notebook; see
docs/architecture.md.
"""

__version__ = "0.1.0"

#: The layers, bottom up, and the modules in each. tests/test_layers.py checks every import
#: of every module against this list; docs/architecture.md draws it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # what every layer needs: one error type, where things live
    ("base", ("labkit", "labkit.errors", "labkit.paths")),
    # one module per kernel primitive: the steps of the lab (stdlib only)
    ("kernel", ("labkit.kernel",)),
    # what the runtime uses besides the kernel: images, networks, and the real Docker to
    # compare with
    ("services", ("labkit.images", "labkit.docker", "labkit.network")),
    # the container lifecycle: spec, helper stages, supervisor, records (stdlib only)
    ("runtime", ("labkit.runtime",)),
    # what people use: the CLI, doctor and reset, the notebook helpers
    (
        "front ends",
        (
            "labkit.cli",
            "labkit.cli_images",
            "labkit.cli_network",
            "labkit.doctor",
            "labkit.reset",
            "labkit.lab",
        ),
    ),
)
