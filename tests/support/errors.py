"""The error the local cluster's parts raise (:mod:`tests.support.localcluster`,
:mod:`tests.support.realnode`), in a module of its own so that each can raise it."""


class ClusterError(RuntimeError):
    """The cluster could not be started or is not healthy; the message says which component and why."""
