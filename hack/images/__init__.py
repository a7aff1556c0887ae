"""The container images, built on this machine with no registry and no network inside the build:
``python -m hack.images`` (``make images``). ``base`` debootstraps the base image, ``wheels`` fetches
the locked wheels on the host, ``docker`` runs the engine, ``build`` ties them together per image."""
