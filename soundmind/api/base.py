"""Shared pieces of the soundmind.ai API types: camelCase wire names, strict fields, and the small
Kubernetes value types (secret references, tolerations) the specs embed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "soundmind.ai"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A resource quantity such as 64, 500m, 512Gi, 1.5e3 (the apimachinery grammar, minus signs).
QUANTITY = r"^(\+)?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[numkMGTPE]|([eE][-+]?[0-9]+))?$"
# An extended resource name: optional DNS-subdomain prefix, then a name (nvidia.com/gpu, amd.com/gpu).
RESOURCE_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)


@dataclass(frozen=True)
class ResourceKind:
    """The identity of one custom resource kind: the CRD, the operator's handlers, the RBAC and the
    tests derive every name from here."""

    kind: str  # SoundMindTraining
    plural: str  # soundmindtrainings
    short: str  # smt

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


class ApiModel(BaseModel):
    """Strict, as the CRD's schema is: wire names only in camelCase (`rolloutN`, not `rollout_n`;
    read wire input with `from_api`), unknown fields are errors (a typo must not be silently
    ignored), and no coercion (`epochs: true` or `nodes: '1'` are refused, not read as 1). An
    integer is still a valid `number`, as in the API server; enum fields take their string values."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,  # Python code constructs by field name; `from_api` refuses it
        extra="forbid",
        validate_default=True,
        strict=True,
    )

    @classmethod
    def from_api(cls, data: object) -> Self:
        """The object from its wire form (a manifest, the API server's JSON): camelCase names only."""
        return cls.model_validate(data, by_alias=True, by_name=False)

    def to_api(self) -> dict:
        """The object as the API server stores it: camelCase, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class SecretKeyRef(ApiModel):
    name: str = Field(..., pattern=DNS_SUBDOMAIN, max_length=253, description="Secret name (same namespace).")
    key: str = Field("token", min_length=1, max_length=253, description="Key within the Secret.")


class Toleration(ApiModel):
    key: str | None = Field(None, max_length=316, description="Taint key to tolerate (empty: all keys).")
    operator: Literal["Exists", "Equal"] | None = Field(None, description="Exists or Equal (default Equal).")
    value: str | None = Field(None, max_length=63, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to tolerate (empty: all effects)."
    )
    toleration_seconds: int | None = Field(None, description="For NoExecute: how long to stay bound.")


class Condition(ApiModel):
    type: str = Field(..., max_length=316, description="Condition type, e.g. Schedulable, Running, Available.")
    status: Literal["True", "False", "Unknown"] = Field(..., description="True, False or Unknown.")
    reason: str = Field("", max_length=1024, description="CamelCase reason for the last transition.")
    message: str = Field("", max_length=32768, description="Human-readable details.")
    last_transition_time: str | None = Field(None, description="When the status last changed (RFC 3339).")
    observed_generation: int | None = Field(None, ge=0, description="The spec generation this was based on.")
