"""`soundmind-operator`: the kopf wiring, the start-up settings and the command line. Nothing else:
the work is in `soundmind_operator.training` (builders, status, reconcile loop)."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from dataclasses import dataclass

import kopf

from soundmind.api.base import GROUP, VERSION
from soundmind.train.contract import TRAINING_PLURAL
from soundmind_operator import metrics
from soundmind_operator.kube import Kube, api_client
from soundmind_operator.training import handlers, names

FINALIZER = f"{GROUP}/finalizer"
MANAGED = {names.MANAGED_BY_LABEL: names.OPERATOR_NAME}
MANAGED_SELECTOR = f"{names.MANAGED_BY_LABEL}={names.OPERATOR_NAME}"


WAKE_HANDLERS = ("training_changed", "job_changed", "pod_changed")


class _QuietWakeHandlers(logging.Filter):
    """kopf logs each handler's success; the wake-up handlers run on every Job and pod event."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.endswith("succeeded.") and any(f"'{h}'" in message for h in WAKE_HANDLERS))


@dataclass(frozen=True)
class Options:
    resync_seconds: float = 15.0
    metrics_port: int = 9090  # 0: no /metrics endpoint (images/operator exposes 8080 and 9090)
    watch_server_timeout: int = 300  # seconds; the API server wants an integer


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger, **_) -> None:
    options: Options = memo.options
    # Watches end server-side before the client gives up, so a silent connection is noticed.
    settings.watching.server_timeout = options.watch_server_timeout
    settings.watching.client_timeout = options.watch_server_timeout + 30
    settings.watching.connect_timeout = 30
    # Only the operator's own Jobs and pods are streamed, filtered by the API server.
    settings.watching.label_selectors["batch", "jobs"] = MANAGED_SELECTOR
    settings.watching.label_selectors["v1", "pods"] = MANAGED_SELECTOR
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.enabled = True
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = names.OPERATOR_NAME
    settings.posting.reporting_instance = socket.gethostname()
    settings.posting.event_name_prefix = f"{names.OPERATOR_NAME}-"
    # The resources served are known at start (CRDs are installed first): no need to watch CRDs
    # or namespaces, so the operator's RBAC does not grant that.
    settings.scanning.disabled = True
    # A stopped training loop exits within milliseconds (it only waits on events); waiting that
    # long lets kopf release a deleted training at once instead of re-checking it later.
    settings.background.instant_exit_timeout = 0.1
    memo.training = handlers.TrainingContext(
        kube=Kube(api_client()), metrics=metrics.OperatorMetrics(), resync_seconds=options.resync_seconds
    )
    if options.metrics_port:
        metrics.serve(options.metrics_port)
        logger.info("metrics on :%d/metrics", options.metrics_port)


# On deletion or exit the loop is signalled and finishes its current pass (well under a second)
# before kopf would cancel it.
@kopf.daemon(GROUP, VERSION, TRAINING_PLURAL, cancellation_backoff=10, cancellation_timeout=10)
async def training_loop(name, namespace, stopped, memo: kopf.Memo, logger, **_) -> None:
    await handlers.run(memo.training, namespace, name, stopped, logger)


@kopf.on.event(GROUP, VERSION, TRAINING_PLURAL)
def training_changed(name, namespace, memo: kopf.Memo, **_) -> None:
    memo.training.wakeups.wake(namespace, name)


@kopf.on.delete(GROUP, VERSION, TRAINING_PLURAL, optional=True)
def training_deleted(name, namespace, memo: kopf.Memo, logger, **_) -> None:
    handlers.forget(memo.training, namespace, name, logger)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
def job_changed(namespace, labels, memo: kopf.Memo, **_) -> None:
    handlers.wake_owner(memo.training, namespace, labels)


@kopf.on.event("v1", "pods", labels=MANAGED)
def pod_changed(namespace, labels, memo: kopf.Memo, **_) -> None:
    handlers.wake_owner(memo.training, namespace, labels)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="soundmind-operator",
        description="Reconcile SoundMindTrainings into GPU training Jobs, using the current KUBECONFIG "
        "(or the pod's ServiceAccount in a cluster).",
    )
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument("-n", "--namespace", action="append", metavar="NS", help="serve this namespace (repeatable)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="serve every namespace")
    parser.add_argument(
        "--peering",
        metavar="NAME",
        help="coordinate replicas through the KopfPeering NAME (config/crd/kopf-peering.yaml); "
        "without it the operator runs standalone: run exactly one replica",
    )
    parser.add_argument("--priority", type=int, default=0, help="peering priority (the highest runs)")
    parser.add_argument("--resync-seconds", type=float, default=Options.resync_seconds, help="re-check interval")
    parser.add_argument("--metrics-port", type=int, default=Options.metrics_port, help="/metrics port (0: off)")
    parser.add_argument("--liveness-port", type=int, default=8080, help="/healthz port (0: off)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kopf.configure(debug=args.verbose, log_prefix=True)  # messages about an object name it: [ns/name]
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietWakeHandlers())
    options = Options(resync_seconds=args.resync_seconds, metrics_port=args.metrics_port)
    kopf.run(
        clusterwide=args.all_namespaces,
        namespaces=args.namespace or (),
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=args.priority,
        liveness_endpoint=f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None,
        memo=kopf.Memo(options=options),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
