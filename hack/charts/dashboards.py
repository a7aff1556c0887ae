"""The three Grafana dashboards (Training, Serving, Operator), built with Grafana's own
grafana-foundation-sdk from the metric-name modules: a renamed metric changes the queries here, and
tests/integration/test_observability.py runs every query against a real Prometheus.

Every dashboard picks its Prometheus with a `datasource` variable and narrows to a namespace and an
object with `namespace` and `training` / `serving` variables (multi-select, All by default).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

from soundmind.api import vllm_metrics as vllm
from soundmind.train import metrics as train
from soundmind_operator import metrics as op
from soundmind_operator.serving import names as serving_names

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
TAGS = ["soundmind"]

# Selectors of per-object series: the operator's carry `namespace` and `training` / `serving`; the
# trainer's get `training` from the PodMonitor; vLLM's get the serving's pod labels from the
# operator's ServiceMonitor.
TRAINING = 'namespace=~"$namespace", training=~"$training"'
SERVING = 'namespace=~"$namespace", serving=~"$serving"'
SERVER = (
    f'namespace=~"$namespace", app_kubernetes_io_instance=~"$serving", '
    f'app_kubernetes_io_component="{serving_names.COMPONENT}"'
)
BY_SERVING = "namespace, app_kubernetes_io_instance"
SERVING_LEGEND = "{{namespace}}/{{app_kubernetes_io_instance}}"
TRAINING_LEGEND = "{{namespace}}/{{training}}"


def query(expr: str, legend: str = "") -> prometheus.Dataquery:
    target = prometheus.Dataquery().expr(expr).datasource(DATASOURCE)
    return target.legend_format(legend) if legend else target


def graph(title: str, unit: str, *targets: prometheus.Dataquery, description: str = "") -> timeseries.Panel:
    panel = timeseries.Panel().title(title).unit(unit).datasource(DATASOURCE).height(8).span(12)
    for ref_id, target in zip("ABCDEFGH", targets, strict=False):
        panel = panel.with_target(target.ref_id(ref_id))
    return panel.description(description) if description else panel


def number(title: str, unit: str, target: prometheus.Dataquery, description: str = "") -> stat.Panel:
    panel = stat.Panel().title(title).unit(unit).datasource(DATASOURCE).height(4).span(6)
    panel = panel.with_target(target.ref_id("A"))
    return panel.description(description) if description else panel


def quantiles(histogram: str, selector: str, by: str, legend: str) -> list[prometheus.Dataquery]:
    """p50 and p99 of a histogram over the rate window, one series per `by` group."""
    return [
        query(
            f"histogram_quantile({q}, sum by ({by}, le) (rate({histogram}_bucket{{{selector}}}[{RATE}])))",
            f"p{round(q * 100)} {legend}",
        )
        for q in (0.5, 0.99)
    ]


def variable(name: str, label: str, metric: str, *, scope: str = "") -> db.QueryVariable:
    selector = f"{metric}{{{scope}}}" if scope else metric
    return (
        db.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query({"query": f"label_values({selector}, {name})", "refId": f"{name}-values"})
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )


def base(uid: str, title: str, description: str, *variables: db.QueryVariable) -> db.Dashboard:
    dashboard = (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .refresh("30s")
        .with_variable(db.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )
    for each in variables:
        dashboard = dashboard.with_variable(each)
    return dashboard


def training() -> db.Dashboard:
    namespaces = variable("namespace", "Namespace", op.TRAINING_GPUS_REQUESTED)
    trainings = variable("training", "Training", op.TRAINING_GPUS_REQUESTED, scope='namespace=~"$namespace"')
    return (
        base(
            "soundmind-training",
            "SoundMind / Training",
            "SoundMindTrainings: phases, GRPO progress, reward and validation accuracy, GPUs, retries, pending "
            "and stalled runs. Operator series from its ServiceMonitor, run series from the trainer PodMonitor.",
            namespaces,
            trainings,
        )
        .with_row(db.Row("Phases"))
        .with_panel(graph("Trainings by phase", "short", query(f"sum by (phase) ({op.TRAININGS})", "{{phase}}")))
        .with_panel(
            graph(
                "Time pending before all pods run (p50, p90)",
                "s",
                *[
                    query(
                        f"histogram_quantile({q}, sum by (le) "
                        f"(increase({op.TRAINING_PENDING_DURATION}_bucket[$__range])))",
                        f"p{round(q * 100)}",
                    )
                    for q in (0.5, 0.9)
                ],
                description="From an attempt's Job creation until all its pods run, over the dashboard's range.",
            )
        )
        .with_row(db.Row("Progress"))
        .with_panel(
            graph(
                "Step vs total steps",
                "short",
                query(f"{train.STEP}{{{TRAINING}}}", f"step {TRAINING_LEGEND}"),
                query(f"{train.TOTAL_STEPS}{{{TRAINING}}}", f"total {TRAINING_LEGEND}"),
            )
        )
        .with_panel(
            graph(
                "Steps per hour",
                "short",
                query(f"rate({train.STEP}{{{TRAINING}}}[{RATE}]) * 3600", TRAINING_LEGEND),
            )
        )
        .with_panel(
            graph("Reward mean", "short", query(f"{train.REWARD_MEAN}{{{TRAINING}}}", TRAINING_LEGEND)).description(
                "Mean SoundMind-RL reward (format + answer + length) of each GRPO step."
            )
        )
        .with_panel(
            graph("Validation accuracy", "percentunit", query(f"{train.VAL_ACCURACY}{{{TRAINING}}}", TRAINING_LEGEND))
        )
        .with_panel(
            graph(
                "Steps in the last 15 minutes (0 while running: stalled)",
                "short",
                query(f"changes({train.STEP}{{{TRAINING}}}[15m])", TRAINING_LEGEND),
                description="A running training whose step has not moved is stalled (alert SoundMindTrainingStalled).",
            )
        )
        .with_panel(
            graph(
                "Last checkpoint step",
                "short",
                query(f"{train.LAST_CHECKPOINT_STEP}{{{TRAINING}}}", TRAINING_LEGEND),
            )
        )
        .with_row(db.Row("GPUs and retries"))
        .with_panel(
            graph(
                "GPUs requested vs running",
                "short",
                query(
                    f"sum by (namespace, training) ({op.TRAINING_GPUS_REQUESTED}{{{TRAINING}}})",
                    f"requested {TRAINING_LEGEND}",
                ),
                query(
                    f"sum by (namespace, training) ({op.TRAINING_GPUS_RUNNING}{{{TRAINING}}})",
                    f"running {TRAINING_LEGEND}",
                ),
            )
        )
        .with_panel(graph("GPU-seconds", "s", query(f"{op.TRAINING_GPU_SECONDS}{{{TRAINING}}}", TRAINING_LEGEND)))
        .with_panel(
            graph(
                "Retries (whole-group restarts)",
                "short",
                query(f"{op.TRAINING_RETRIES}{{{TRAINING}}}", TRAINING_LEGEND),
                description="Each retry resumes from the last checkpoint; maxRetries bounds them.",
            )
        )
        .with_panel(
            graph(
                "Throughput (tokens/s per GPU)",
                "short",
                query(f"{train.THROUGHPUT}{{{TRAINING}}}", TRAINING_LEGEND),
            )
        )
    )


def serving() -> db.Dashboard:
    namespaces = variable("namespace", "Namespace", op.SERVING_REPLICAS_DESIRED)
    servings = variable("serving", "Serving", op.SERVING_REPLICAS_DESIRED, scope='namespace=~"$namespace"')
    dashboard = base(
        "soundmind-serving",
        "SoundMind / Serving",
        "SoundMindServings: vLLM latency (TTFT, inter-token, end to end), load (running, waiting, KV cache), "
        "tokens and audio clips per second, and replicas. vLLM's series from the ServiceMonitor the operator "
        "makes for each serving.",
        namespaces,
        servings,
    )
    dashboard = (
        dashboard.with_row(db.Row("Latency"))
        .with_panel(
            graph("Time to first token", "s", *quantiles(vllm.TIME_TO_FIRST_TOKEN, SERVER, BY_SERVING, SERVING_LEGEND))
        )
        .with_panel(
            graph("Inter-token latency", "s", *quantiles(vllm.INTER_TOKEN_LATENCY, SERVER, BY_SERVING, SERVING_LEGEND))
        )
        .with_panel(
            graph(
                "End-to-end request latency",
                "s",
                *quantiles(vllm.E2E_REQUEST_LATENCY, SERVER, BY_SERVING, SERVING_LEGEND),
            )
        )
        .with_row(db.Row("Load"))
        .with_panel(
            graph(
                "Requests running and waiting",
                "short",
                query(f"sum by ({BY_SERVING}) ({vllm.NUM_REQUESTS_RUNNING}{{{SERVER}}})", f"running {SERVING_LEGEND}"),
                query(f"sum by ({BY_SERVING}) ({vllm.NUM_REQUESTS_WAITING}{{{SERVER}}})", f"waiting {SERVING_LEGEND}"),
                description="Summed over the serving's replicas: the signal its autoscaler follows.",
            )
        )
        .with_panel(
            graph(
                "KV-cache usage (fullest replica)",
                "percentunit",
                query(f"max by ({BY_SERVING}) ({vllm.KV_CACHE_USAGE}{{{SERVER}}})", SERVING_LEGEND),
            ).max(1)
        )
        .with_panel(
            graph(
                "Tokens per second",
                "short",
                query(
                    f"sum by ({BY_SERVING}) (rate({vllm.PROMPT_TOKENS}{{{SERVER}}}[{RATE}]))",
                    f"prompt {SERVING_LEGEND}",
                ),
                query(
                    f"sum by ({BY_SERVING}) (rate({vllm.GENERATION_TOKENS}{{{SERVER}}}[{RATE}]))",
                    f"generated {SERVING_LEGEND}",
                ),
            )
        )
        .with_panel(
            graph(
                "Audio requests per second",
                "reqps",
                query(f"sum by ({BY_SERVING}) (rate({vllm.MM_ITEMS}{{{SERVER}}}[{RATE}]))", f"audio {SERVING_LEGEND}"),
                query(
                    f"sum by ({BY_SERVING}, finished_reason) (rate({vllm.REQUEST_SUCCESS}{{{SERVER}}}[{RATE}]))",
                    "finished ({{finished_reason}}) " + SERVING_LEGEND,
                ),
                description="Audio clips vLLM processed (one per SoundMind request) and requests finished, by reason.",
            )
        )
        .with_row(db.Row("Replicas"))
        .with_panel(
            graph(
                "Replicas desired vs ready",
                "short",
                query(f"{op.SERVING_REPLICAS_DESIRED}{{{SERVING}}}", "desired {{namespace}}/{{serving}}"),
                query(f"{op.SERVING_REPLICAS_READY}{{{SERVING}}}", "ready {{namespace}}/{{serving}}"),
                query(f"{op.SERVING_REPLICAS_MIN}{{{SERVING}}}", "min {{namespace}}/{{serving}}"),
                query(f"{op.SERVING_REPLICAS_MAX}{{{SERVING}}}", "max {{namespace}}/{{serving}}"),
            )
        )
        .with_panel(graph("Servings by phase", "short", query(f"sum by (phase) ({op.SERVINGS})", "{{phase}}")))
    )
    return dashboard


def operator() -> db.Dashboard:
    errors = f'{op.RECONCILE_TOTAL}{{result!="{op.RESULT_OK}"}}'
    return (
        base(
            "soundmind-operator",
            "SoundMind / Operator",
            "The soundmind-operator: reconcile passes, errors and durations, its requests to the API server, "
            "and the objects it manages.",
        )
        .with_panel(
            number(
                "Operator up",
                "short",
                query('sum(up{job="soundmind-operator"})'),
                description="Scrape targets of the operator that answer (1: running).",
            )
        )
        .with_panel(number("Trainings", "short", query(f"sum({op.TRAININGS})")))
        .with_panel(number("Servings", "short", query(f"sum({op.SERVINGS})")))
        .with_panel(number("GPUs running", "short", query(f"sum({op.TRAINING_GPUS_RUNNING})")))
        .with_panel(
            graph(
                "Reconcile passes per second",
                "ops",
                query(f"sum by (kind, result) (rate({op.RECONCILE_TOTAL}[{RATE}]))", "{{kind}} {{result}}"),
            )
        )
        .with_panel(
            graph(
                "Reconcile errors and conflicts per second",
                "ops",
                # `or ... * 0`: a kind with no failed pass yet shows 0 instead of nothing.
                query(
                    f"sum by (kind) (rate({errors}[{RATE}])) or sum by (kind) (rate({op.RECONCILE_TOTAL}[{RATE}])) * 0",
                    "{{kind}}",
                ),
                description="Errors are retried with backoff; conflicts are re-read at once.",
            )
        )
        .with_panel(
            graph(
                "Reconcile pass duration",
                "s",
                *quantiles(op.RECONCILE_DURATION, "", "kind", "{{kind}}"),
            )
        )
        .with_panel(
            graph(
                "API requests per second by verb",
                "reqps",
                query(f"sum by (verb) (rate({op.API_REQUESTS}[{RATE}]))", "{{verb}}"),
                description="Requests of reconcile passes (watches excluded): a settled object costs none.",
            )
        )
    )


DASHBOARDS: dict[str, Callable[[], db.Dashboard]] = {"training": training, "serving": serving, "operator": operator}


def render(name: str) -> str:
    return json.dumps(DASHBOARDS[name]().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
