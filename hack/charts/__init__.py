"""Generators of the charts' derived files, from the one source of each fact:

- `charts/soundmind-serving/values.schema.json` from the `ServingSpec` type (`serving_schema`),
- `charts/soundmind-operator/dashboards/*.json` with Grafana's own SDK (`dashboards`),
- `charts/soundmind-operator/rules/soundmind.rules.yaml`, the alerts (`alerts`),

the last two from the metric-name modules, so a renamed metric changes (or breaks) them here.
`python -m hack.charts --write` regenerates them; `--check` (and tests/unit/charts) fails when a
committed file differs from what the generators make.
"""
