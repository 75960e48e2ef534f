"""samples -> events -> messages: the gateway side of stopewatch.

``edge.gateway`` is the runtime the daemon executes, ``edge.field`` the technician's tools, ``edge.devtools``
the demo, local broker, replay and scoring. Shared by all three (and by training and the surface): the data
formats (``edge.formats``), the vocabulary (``edge.vocabulary``), the topic layout (``edge.topics``), the
message schemas (``edge/schemas/``) and the one-line user errors (``edge.errors``). ``edge.cli`` is the
``stopewatch`` command.
"""

def package_version() -> str:
    """The installed stopewatch version (``0+unknown`` when run from a tree that was never installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("stopewatch")
    except PackageNotFoundError:
        return "0+unknown"
