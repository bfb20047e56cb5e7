"""Check rendered objects against their schemas, strictly, without a cluster.

Built-in kinds (Deployment, Service, HorizontalPodAutoscaler, ...) are checked against the upstream
OpenAPI schema of one pinned Kubernetes minor version, as the PyPI package `kubernetes-validate` ships
it, in its strict form (unknown fields refused). Custom resources (KServe's InferenceService,
prometheus-operator's PodMonitor) are checked against the `openAPIV3Schema` of their CRD, tightened the
same way: every object node that lists its properties and does not say
`x-kubernetes-preserve-unknown-fields` refuses the ones it does not list. Their `metadata` is checked
against the built-in ObjectMeta, which CRDs leave open.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from nexus.errors import ManifestInvalidError, MissingDependencyError

#: The Kubernetes minor version every rendered built-in object is validated against: the oldest minor
#: upstream still supports on 2026-12-02 (1.35, 1.36, 1.37).
KUBERNETES_VERSION = "1.35"

_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def _kubernetes_validate() -> Any:
    try:
        import kubernetes_validate
    except ImportError as e:
        raise MissingDependencyError("validating Kubernetes objects (kubernetes-validate)", "deploy") from e
    return kubernetes_validate


def _error_path(error: Any) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top)"


def validate_builtin(obj: Mapping[str, Any], version: str = KUBERNETES_VERSION) -> str:
    """Validate a built-in object strictly against Kubernetes ``version``; returns the version used.

    Raises:
        ManifestInvalidError: the object does not validate (or no schema has its kind and apiVersion).
    """
    kv = _kubernetes_validate()
    kind, name = str(obj.get("kind")), str(obj.get("metadata", {}).get("name"))
    try:
        return str(kv.validate(dict(obj), version, strict=True))
    except kv.ValidationError as e:
        raise ManifestInvalidError(kind, name, f"{_error_path(e)}: {e.message}") from None
    except kv.SchemaNotFoundError as e:
        raise ManifestInvalidError(kind, name, e.message) from None


@cache
def _object_meta_schema(version: str) -> dict[str, Any]:
    kv = _kubernetes_validate()
    from kubernetes_validate.utils import all_versions, major_minor

    found = [v for v in all_versions() if major_minor(v) <= major_minor(version)][-1]
    definitions: dict[str, Any] = kv.utils.schema_contents(
        f"kubernetes-json-schema/v{found}-local-strict/_definitions.json", version
    )["$defs"]
    schema: dict[str, Any] = copy.deepcopy(definitions[_OBJECT_META])
    schema["$defs"] = definitions
    rebased: dict[str, Any] = _rebase_refs(schema)
    return rebased


def _rebase_refs(node: Any) -> Any:
    """`/api/_definitions.json#/$defs/X` -> `#/$defs/X`, so the schema stands alone."""
    if isinstance(node, dict):
        return {
            k: (v.split("_definitions.json", 1)[-1] if k == "$ref" and isinstance(v, str) else _rebase_refs(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rebase_refs(v) for v in node]
    return node


def tighten(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of a CRD schema in which every object node with ``properties`` refuses fields it does not list."""

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            open_node = node.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in node
            if node.get("type") == "object" and "properties" in node and not open_node:
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    tightened = copy.deepcopy(schema)
    visit(tightened)
    return tightened


class CRD:
    """One CustomResourceDefinition file: the kind it defines and the tightened schema of each version."""

    def __init__(self, path: Path) -> None:
        import yaml

        self.path = path
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 - a safe loader
        spec = data["spec"]
        self.kind: str = spec["names"]["kind"]
        self.schemas: dict[str, dict[str, Any]] = {}
        for version in spec["versions"]:
            schema = dict(version["schema"]["openAPIV3Schema"])
            properties = dict(schema.get("properties", {}))
            properties.pop("metadata", None)  # checked against ObjectMeta instead
            schema["properties"] = properties
            self.schemas[f"{spec['group']}/{version['name']}"] = tighten(schema)


def load_crds(paths: Iterable[Path]) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> tightened schema, for every version of every CRD file."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in paths:
        crd = CRD(path)
        for api_version, schema in crd.schemas.items():
            schemas[(api_version, crd.kind)] = schema
    return schemas


def validate_custom(obj: Mapping[str, Any], schema: dict[str, Any], version: str = KUBERNETES_VERSION) -> None:
    """Validate a custom resource against its (tightened) CRD schema, and its metadata against ObjectMeta.

    Raises:
        ManifestInvalidError: it does not validate.
    """
    import jsonschema

    kind, name = str(obj.get("kind")), str(obj.get("metadata", {}).get("name"))
    body = {k: v for k, v in obj.items() if k != "metadata"}
    for part, part_schema in ((body, schema), (obj.get("metadata", {}), _object_meta_schema(version))):
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(part_schema).iter_errors(part))
        if error is not None:
            where = _error_path(error) if part is body else f"metadata.{_error_path(error)}"
            raise ManifestInvalidError(kind, name, f"{where}: {error.message}")


def validate_objects(
    objects: Iterable[Mapping[str, Any]],
    crds: Mapping[tuple[str, str], dict[str, Any]] | None = None,
    version: str = KUBERNETES_VERSION,
) -> list[str]:
    """Validate each object: custom ones against ``crds`` when their schema is there, the rest as built-ins.

    Returns `Kind/name` for each object validated, in order.

    Raises:
        ManifestInvalidError: the first object that does not validate.
    """
    done: list[str] = []
    for obj in objects:
        key = (str(obj.get("apiVersion")), str(obj.get("kind")))
        schema = (crds or {}).get(key)
        if schema is not None:
            validate_custom(obj, schema, version)
        else:
            validate_builtin(obj, version)
        done.append(f"{key[1]}/{obj.get('metadata', {}).get('name')}")
    return done
