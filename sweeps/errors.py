"""The one error the service raises when something it runs on cannot be used.

`Unavailable`: the Ray cluster, the MLflow tracking store or the sweep's
storage cannot be reached, read or written. Its message is one line that
names the address, URI or path and says what to check; the CLI prints it and
exits 1. It is raised before the sweep's MLflow parent run exists, so a
failed start leaves no run behind.
"""


class Unavailable(RuntimeError):
    """A cluster, tracking store or storage path that cannot be used (one-line message)."""
