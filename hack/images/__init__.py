"""Container images built here, offline: see hack/images/__main__.py."""
