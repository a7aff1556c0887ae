"""Test support: the local cluster (localcluster, realnode, oci_archive, pki, stages, errors), its
simulation contract (sim), the ``kube`` fixture's clients (kube) and polling (poll)."""
