"""The release version: the package, the image tags and the CRDs' defaults all read it from here."""

VERSION = "0.1.0"
# Where the sources live: the images' org.opencontainers.image.source label and the chart's `home`.
SOURCE_URL = "https://github.com/soundmind-ai/soundmind-k8s"
IMAGE_REPOSITORY = "ghcr.io/soundmind-ai"
TRAINER_IMAGE = f"{IMAGE_REPOSITORY}/soundmind-trainer:{VERSION}"
OPERATOR_IMAGE = f"{IMAGE_REPOSITORY}/soundmind-operator:{VERSION}"
SERVER_IMAGE = f"{IMAGE_REPOSITORY}/soundmind-server:{VERSION}"
