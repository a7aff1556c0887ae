"""`soundmind-operator`: the kopf wiring, the start-up settings and the command line. Nothing else:
the work is in `soundmind_operator.training` and `soundmind_operator.serving` (names, builders, a
pure state machine, a reconcile pass each) on the shared core (`loop`, `cache`, `kube`, ...).

Every handler is `async def` and does no I/O: kopf runs sync handlers in a thread pool, and the
wake-up events and metrics they touch belong to the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import aiohttp
import kopf

from soundmind.api.base import GROUP, VERSION
from soundmind.api.serving import SERVING
from soundmind.api.training import TRAINING
from soundmind_operator import cache, loop, metrics, references
from soundmind_operator.kube import Kube, api_client
from soundmind_operator.labels import MANAGED, MANAGED_SELECTOR, OPERATOR_NAME
from soundmind_operator.serving import builders as serving_builders
from soundmind_operator.serving import names as serving_names
from soundmind_operator.serving.reconcile import ServingCache, ServingReconciler, training_view
from soundmind_operator.training import names as training_names
from soundmind_operator.training.reconcile import (
    KUEUE_GROUP,
    POD_GROUP_API,
    TrainingCache,
    TrainingReconciler,
    warm_up,
)

FINALIZER = f"{GROUP}/finalizer"
# Which kind owns the children of each component.
KIND_OF_COMPONENT = {training_names.COMPONENT: TRAINING.kind, serving_names.COMPONENT: SERVING.kind}
# Handlers that run on every watch event; kopf's per-event success lines would drown the log.
QUIET_HANDLERS = ("training_changed", "serving_changed", "child_changed", "wake_")


class _QuietWakeHandlers(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.endswith("succeeded.") and any(f"'{h}" in message for h in QUIET_HANDLERS))


@dataclass(frozen=True)
class Options:
    resync_seconds: float = 15.0
    metrics_port: int = 9090  # 0: no /metrics endpoint (images/operator exposes 8080 and 9090)
    watch_server_timeout: int = 300  # seconds; the API server wants an integer
    prometheus_url: str = serving_builders.DEFAULT_PROMETHEUS_URL
    # Passes wait on the API most of their time: more threads than asyncio's default (cores + 4) let
    # a burst of new objects be worked on together, as a client with that many threads would.
    pass_threads: int = 32
    # kopf's own requests (finalizers, events, peering) at once, besides its watches.
    kopf_connections: int = 16


# With peering, a replica that stops renewing its peering record is taken for dead this long after
# its last renewal, and a standby then takes over (kopf renews every lifetime - 5..10 s). kopf's 60 s
# left a killed replica's objects unattended for most of a minute (52 s measured); 15 s is the
# hand-over of a lease-based controller, at the cost of a peering PATCH every 5-10 s per replica.
PEERING_LIFETIME_SECONDS = 15

# One long-lived watch per kind of child, one per custom resource kind, peering's, and the
# referenced PVCs' and nodes'.
WATCH_STREAMS = len(cache.WATCHED) + 5


@kopf.on.login()
async def login(logger, settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> kopf.AiohttpSession:
    """kopf's own login (the pod's ServiceAccount, else $KUBECONFIG), on a session with a bounded
    connection pool. kopf's default session has no limit (aiohttp's `limit=0`): each of its requests
    that finds no idle connection opens a new one, so the first pass over 700 existing objects held
    about 1,450 TLS connections at once, each with its 256 KiB read buffer: 190 MB of the heap that
    malloc keeps once they close, and a TLS handshake each for the API server."""
    info = await asyncio.to_thread(kopf.login_via_client, logger=logger, settings=settings)
    if info is None:  # the kubernetes client is a dependency: kopf returns None only without it
        raise kopf.LoginError("the kubernetes client library is not installed")
    connector = aiohttp.TCPConnector(limit=WATCH_STREAMS + memo.options.kopf_connections, ssl=info.as_ssl_context())
    return kopf.AiohttpSession(
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
        aiohttp_session=aiohttp.ClientSession(
            connector=connector, headers=info.as_http_headers(), trust_env=info.trust_env
        ),
    )


class _NoDiffBase(kopf.DiffBaseStorage):
    """kopf's diff base ("essence") is what resource-changing handlers diff against; kopf builds it
    for every watch event of every watched kind, a deep copy of the whole object (managedFields and
    status included), and with no such handler nothing reads it: about 12% of the operator's CPU
    in a burst. This storage keeps no diff base and builds none."""

    def build(self, *, body, extra_fields=None) -> dict:
        return {}

    def fetch(self, *, body) -> None:
        return None

    def store(self, *, body, patch, essence) -> None:
        return None


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger, **_) -> None:
    options: Options = memo.options
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=options.pass_threads, thread_name_prefix="pass")
    )
    # Watches end server-side before the client gives up, so a silent connection is noticed.
    settings.watching.server_timeout = options.watch_server_timeout
    settings.watching.client_timeout = options.watch_server_timeout + 30
    settings.watching.connect_timeout = 30
    settings.peering.lifetime = PEERING_LIFETIME_SECONDS
    # Only the operator's own children are streamed, filtered by the API server.
    for watched in cache.WATCHED:
        settings.watching.label_selectors[watched.group or watched.version, watched.plural] = MANAGED_SELECTOR
    # The daemons' finalizer is kopf's only write onto our objects: there are no resource-changing
    # handlers (on.create/update/delete), whose progress and last-handled-configuration annotation
    # would cost every new object a second PATCH and its watch event.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.diffbase_storage = _NoDiffBase()
    # Events: what passes decide (a condition's news, a phase, a retry) and warnings logged on an
    # object, not its INFO log lines ("applied ...", "created Job ..."): they repeated the decisions'
    # own events, two more writes per new training.
    settings.posting.enabled = True
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = OPERATOR_NAME
    settings.posting.reporting_instance = socket.gethostname()
    settings.posting.event_name_prefix = f"{OPERATOR_NAME}-"
    # The resources served are known at start (CRDs are installed first): no need to watch CRDs
    # or namespaces, so the operator's RBAC does not grant that.
    settings.scanning.disabled = True
    # A stopped loop exits within milliseconds (it only waits on events); waiting that long lets
    # kopf release a deleted object at once instead of re-checking it later.
    settings.background.instant_exit_timeout = 0.1

    operator_metrics: metrics.OperatorMetrics = memo.metrics
    kube = Kube(
        api_client(options.pass_threads), on_request=lambda verb: operator_metrics.api_requests.labels(verb).inc()
    )
    memo.node_verdicts = references.NodeVerdicts()
    memo.loop = loop.LoopContext(
        metrics=operator_metrics,
        resync_seconds=options.resync_seconds,
        finalizer=FINALIZER,
    )
    # What the cluster offers is decided once, here, not with a 404 on every pass.
    kueue, pod_groups, platform = await asyncio.to_thread(_discover, kube, options)
    await asyncio.to_thread(warm_up)
    memo.training = TrainingReconciler(
        kube, operator_metrics, kueue_version=kueue[0] if kueue else None, pod_group_api=pod_groups
    )
    memo.serving = ServingReconciler(kube, operator_metrics, platform)
    scaler = "KEDA ScaledObjects" if platform.keda else "HorizontalPodAutoscalers (KEDA is not installed)"
    logger.info(
        "servings scale with %s; %s; Kueue %s; multi-node trainings are placed all-or-nothing by %s",
        scaler,
        "ServiceMonitors" if platform.service_monitors else "prometheus.io annotations (no prometheus-operator)",
        kueue[0] if kueue else "not installed",
        "the scheduler (PodGroups)"
        if pod_groups
        else "Kueue (with queueName) or the operator's guard (no PodGroup API: gangTimeoutSeconds)",
    )
    if options.metrics_port:
        metrics.serve(options.metrics_port)
        logger.info("metrics on :%d/metrics", options.metrics_port)


def _discover(kube: Kube, options: Options) -> tuple[list[str], bool, serving_builders.Platform]:
    platform = serving_builders.Platform(
        keda=kube.serves("keda.sh", "v1alpha1", "scaledobjects"),
        service_monitors=kube.serves("monitoring.coreos.com", "v1", "servicemonitors"),
        prometheus_url=options.prometheus_url,
    )
    return kube.served_versions(KUEUE_GROUP), kube.serves(*POD_GROUP_API), platform


# -- the watched children: one index per kind, keyed by owner; each event wakes the owner --------


async def _index_owned(namespace, labels, body, **_) -> dict:
    key = cache.owner_key(namespace, labels)
    return {key: cache.trimmed(body)} if key else {}


async def _child_changed(namespace, labels, meta, memo: kopf.Memo, **_) -> None:
    key = cache.owner_key(namespace, labels)
    if key is not None and key[1] in KIND_OF_COMPONENT:
        memo.loop.wakeups.wake(KIND_OF_COMPONENT[key[1]], key[0], key[2], meta.get("resourceVersion"))


for _watched in cache.WATCHED:
    _resource = (_watched.group, _watched.version, _watched.plural) if _watched.group else ("v1", _watched.plural)
    kopf.index(*_resource, labels=MANAGED, id=_watched.index_id)(_index_owned)
    kopf.on.event(*_resource, labels=MANAGED, id=f"wake_{_watched.plural}")(_child_changed)


# -- SoundMindTraining ----------------------------------------------------------------------------


# On deletion or exit the loop is signalled and finishes its current pass (well under a second)
# before kopf would cancel it.
@kopf.daemon(GROUP, VERSION, TRAINING.plural, cancellation_backoff=10, cancellation_timeout=10)
async def training_loop(name, namespace, body, spec, stopped, memo: kopf.Memo, logger, **indices) -> None:
    key = (namespace, training_names.COMPONENT, name)

    def read_cache() -> TrainingCache:
        needs = references.needs_of(TRAINING.kind, spec)  # kopf keeps `spec` current
        return TrainingCache(owned=cache.read(indices, key), seen=cache.referenced(indices, namespace, needs))

    await loop.run(memo.loop, memo.training, namespace, name, stopped, logger, body, read_cache)


@kopf.index(GROUP, VERSION, TRAINING.plural)
async def trainings(namespace, name, body, **_) -> dict:
    """What servings read of a training (its phase and exported model)."""
    return {(namespace, name): training_view(body)}


@kopf.index(GROUP, VERSION, SERVING.plural)
async def servings_by_training(namespace, name, spec, **_) -> dict:
    source = (spec.get("fromTraining") or {}).get("name")
    return {(namespace, source): name} if source else {}


@kopf.on.event(GROUP, VERSION, TRAINING.plural)
async def training_changed(
    type, name, namespace, meta, memo: kopf.Memo, servings_by_training: kopf.Index, logger, **_
) -> None:
    if type == "DELETED":  # gone from the API (kopf released it once its loop ended)
        memo.training.forget(namespace, name)
        logger.info("training %s/%s deleted; its children go with it (owner references)", namespace, name)
    else:
        memo.loop.wakeups.wake(TRAINING.kind, namespace, name, meta.get("resourceVersion"))
    for serving in servings_by_training.get((namespace, name), []):
        memo.loop.wakeups.wake(SERVING.kind, namespace, serving)


# -- SoundMindServing -----------------------------------------------------------------------------


@kopf.daemon(GROUP, VERSION, SERVING.plural, cancellation_backoff=10, cancellation_timeout=10)
async def serving_loop(name, namespace, body, spec, stopped, memo: kopf.Memo, logger, **indices) -> None:
    key = (namespace, serving_names.COMPONENT, name)

    def read_cache() -> ServingCache:
        source = (spec.get("fromTraining") or {}).get("name")  # kopf keeps `spec` current
        views = list(indices["trainings"].get((namespace, source), [])) if source else []
        needs = references.needs_of(SERVING.kind, spec)
        return ServingCache(
            owned=cache.read(indices, key),
            training=views[0] if views else None,
            seen=cache.referenced(indices, namespace, needs),
        )

    await loop.run(memo.loop, memo.serving, namespace, name, stopped, logger, body, read_cache)


@kopf.on.event(GROUP, VERSION, SERVING.plural)
async def serving_changed(type, name, namespace, meta, memo: kopf.Memo, logger, **_) -> None:
    if type == "DELETED":
        memo.serving.forget(namespace, name)
        logger.info("serving %s/%s deleted; its children go with it (owner references)", namespace, name)
    else:
        memo.loop.wakeups.wake(SERVING.kind, namespace, name, meta.get("resourceVersion"))


# -- what specs refer to: claims and nodes, watched read-only; each change wakes the objects it concerns --


@kopf.index(GROUP, VERSION, TRAINING.plural)
async def training_references(namespace, name, spec, **_) -> dict:
    return references.users(namespace, name, references.needs_of(TRAINING.kind, spec))


@kopf.index(GROUP, VERSION, SERVING.plural)
async def serving_references(namespace, name, spec, **_) -> dict:
    return references.users(namespace, name, references.needs_of(SERVING.kind, spec))


# Index ids are keywords; both kinds' indices of references, by kind.
REFERENCE_INDICES = {TRAINING.kind: "training_references", SERVING.kind: "serving_references"}


@kopf.index("v1", "persistentvolumeclaims", id=cache.CLAIMS_INDEX)
async def _claim_view(namespace, name, body, **_) -> dict:
    return {(namespace, name): references.claim_view(body)}


@kopf.on.event("v1", "persistentvolumeclaims")
async def wake_claim_users(namespace, name, memo: kopf.Memo, **indices) -> None:
    for kind, index_id in REFERENCE_INDICES.items():
        for user in indices[index_id].get(("claim", namespace, name), []):
            memo.loop.wakeups.wake(kind, namespace, user)


@kopf.index("v1", "nodes", id=cache.NODES_INDEX)
async def _node_view(body, **_) -> dict:
    return {references.ALL_NODES: references.node_view(body)}


@kopf.on.event("v1", "nodes")
async def wake_node_users(type, name, body, memo: kopf.Memo, **indices) -> None:
    """Only a change of a node's labels, allocatable resources or schedulability, and only the
    objects whose verdict it changes (`references.NodeVerdicts`): heartbeats wake nobody."""
    verdicts: references.NodeVerdicts = memo.node_verdicts
    if not verdicts.seen(name, None if type == "DELETED" else references.node_view(body)):
        return
    users: dict[references.NodeNeeds, list[tuple[str, str, str]]] = {}
    for kind, index_id in REFERENCE_INDICES.items():
        for key, store in indices[index_id].items():
            if key[0] == "nodes":
                users.setdefault(key[1], []).extend((kind, namespace, user) for namespace, user in store)
    for needs in verdicts.changed(users):
        for kind, namespace, user in users[needs]:
            memo.loop.wakeups.wake(kind, namespace, user)


# -- command line ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="soundmind-operator",
        description="Reconcile SoundMindTrainings into GPU training Jobs and SoundMindServings into autoscaled "
        "vLLM Deployments, using the current KUBECONFIG (or the pod's ServiceAccount in a cluster).",
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
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=Options.resync_seconds,
        help="re-check interval of objects that change with time (running trainings); others are re-checked "
        "when a timeout falls due, and once in 20 intervals as a safety net",
    )
    parser.add_argument("--metrics-port", type=int, default=Options.metrics_port, help="/metrics port (0: off)")
    parser.add_argument("--liveness-port", type=int, default=8080, help="/healthz port (0: off)")
    parser.add_argument(
        "--prometheus-url",
        default=Options.prometheus_url,
        help="the Prometheus that KEDA queries for vLLM's metrics (default %(default)s)",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def peer_identity() -> str:
    """This process's name among peers: the host (the pod's name in a cluster) and the pid. kopf's
    own default asks the password database for the user, and a container running as a numeric UID
    that the image does not list (the chart's 65532, or whatever UID OpenShift assigns) has none:
    kopf's start-up then dies with KeyError before the liveness endpoint answers."""
    return f"{socket.gethostname()}/{os.getpid()}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kopf.configure(debug=args.verbose, log_prefix=True)  # messages about an object name it: [ns/name]
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietWakeHandlers())
    options = Options(
        resync_seconds=args.resync_seconds, metrics_port=args.metrics_port, prometheus_url=args.prometheus_url
    )
    kopf.run(
        clusterwide=args.all_namespaces,
        namespaces=args.namespace or (),
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=args.priority,
        identity=peer_identity(),
        liveness_endpoint=f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None,
        # Made once per process: a start-up retried by kopf must not register the metrics twice.
        memo=kopf.Memo(options=options, metrics=metrics.OperatorMetrics()),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
