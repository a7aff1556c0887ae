"""What the operator and the trainer pod agree on: names, paths, ports and exit codes.

The operator builds pods from these; `soundmind train` reads them. Changing one side without the
other is impossible because both import this module.
"""

from soundmind.api.base import GROUP
from soundmind.api.training import TRAINING

# The rendered TrainingSpec is mounted from a ConfigMap at CONFIG_DIR/CONFIG_FILE.
CONFIG_DIR = "/etc/soundmind"
CONFIG_FILE = "training.yaml"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_FILE}"

CONTAINER_NAME = "trainer"

# Mount points of the volumes named in spec.storage.
CHECKPOINTS_MOUNT = "/checkpoints"
DATA_MOUNT = "/data"
MODELS_MOUNT = "/models"
SHM_MOUNT = "/dev/shm"

# Environment the operator sets on every training pod.
ENV_TRAINING_NAME = "SOUNDMIND_TRAINING_NAME"  # the SoundMindTraining the pod reports progress to
ENV_NAMESPACE = "SOUNDMIND_NAMESPACE"  # from the downward API
ENV_ATTEMPT = "SOUNDMIND_ATTEMPT"  # 1 + retries so far; keeps each attempt's verl log apart
ENV_HEAD_ADDRESS = "SOUNDMIND_HEAD_ADDRESS"  # stable DNS name of index 0 (headless Service)
ENV_NODE_NAME = "SOUNDMIND_NODE_NAME"  # from the downward API: the preflight names the node it failed on
ENV_JOB_INDEX = "JOB_COMPLETION_INDEX"  # set by the Job controller for Indexed Jobs

# The trainer image's numeric non-root user (images/trainer/Dockerfile; a test ties the two): the pod
# runs as it and volumes are made group-writable for it.
TRAINER_UID = 1000

RAY_HEAD_PORT = 6379
METRICS_PORT = 9400  # the head's Prometheus endpoint (progress of the run)

# `soundmind train` exit codes. The Job's podFailurePolicy fails the Job at once, without retry,
# on CONFIG_ERROR: the same spec would fail the same way again.
EXIT_OK = 0
EXIT_CONFIG_ERROR = 78  # EX_CONFIG (sysexits.h): the spec, data or verl overrides are invalid, or the node can't run it
EXIT_HEAD_LOST = 75  # EX_TEMPFAIL: a worker lost its Ray head; a retry may succeed
EXIT_WORKERS_MISSING = 69  # EX_UNAVAILABLE: not every node joined the Ray cluster in time; a retry may succeed
EXIT_EXPORT_FAILED = 74  # EX_IOERR: verl succeeded but its model merger did not; a retry resumes and exports again

# Layout of one training's directory on the checkpoint volume. verl writes global_step_N/ and
# latest_checkpointed_iteration.txt there; each attempt gets its own verl log (verl truncates its log on start).
PROGRESS_INTERVAL_SECONDS = 10.0  # the head patches status.progress at most this often


def checkpoint_dir(training_name: str, root: str = CHECKPOINTS_MOUNT) -> str:
    return f"{root}/{training_name}"


def attempt_log_path(checkpoint_directory: str, attempt: int) -> str:
    return f"{checkpoint_directory}/logs/attempt-{attempt}.jsonl"


def trainer_role_rules(training_name: str) -> list[dict]:
    """The only API access a training's pods get: read and patch the status of their own training."""
    return [
        {
            "apiGroups": [GROUP],
            "resources": [f"{TRAINING.plural}/status"],
            "resourceNames": [training_name],
            "verbs": ["get", "patch"],
        }
    ]
