"""Test support: the local cluster (localcluster, pki, stages), its simulation contract (sim), the
``kube`` fixture's clients (kube) and polling (poll)."""
