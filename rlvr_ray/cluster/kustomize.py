"""A small offline renderer for the subset of kustomize that ``cluster/`` uses, so manifests can be checked and
validated without kubectl or a kustomize binary.

Supported kustomization fields, applied in kustomize's own order (resources, patches, namespace, images,
replacements):

- ``resources``: files (multi-document YAML) and directories holding a kustomization;
- ``patches``: JSON6902 operation lists (add/remove/replace/test) with a ``target``, and whole-resource deletes
  (a strategic-merge patch that is only ``$patch: delete``);
- ``namespace``: set on every namespaced object (a Namespace object is renamed to it, as kustomize does);
- ``images``: name -> newName/newTag in every ``containers``/``initContainers`` list, at any depth, as kustomize's
  images transformer does for custom resources too;
- ``replacements``: copy one field (scalar or whole subtree) of a source object into fields of target objects.

Anything else raises :class:`KustomizeError`; render such a kustomization with ``kubectl kustomize`` instead.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "patches", "namespace", "images", "replacements"}
# Kinds kustomize treats as cluster-scoped among those a project like this could ship.
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume",
                  "StorageClass", "PriorityClass"}

Doc = dict[str, Any]


class KustomizeError(ValueError):
    """The kustomization uses something this renderer does not support, or is inconsistent; one line."""


def find_kustomization(directory: Path) -> Path | None:
    for name in KUSTOMIZATION_FILES:
        if (directory / name).is_file():
            return directory / name
    return None


def render(directory: str | Path) -> list[Doc]:
    """The objects ``kustomize build DIRECTORY`` would output (order aside)."""
    directory = Path(directory)
    path = find_kustomization(directory)
    if path is None:
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    kustomization = yaml.safe_load(path.read_text()) or {}
    unsupported = sorted(set(kustomization) - SUPPORTED_FIELDS)
    if unsupported:
        raise KustomizeError(f"{path}: field(s) {', '.join(unsupported)} not supported here; use kubectl kustomize")
    docs: list[Doc] = []
    for entry in kustomization.get("resources", []):
        docs.extend(_load_resource(directory / entry))
    _check_unique(docs, path)
    for patch in kustomization.get("patches", []):
        docs = _apply_patch(docs, patch, directory)
    if "namespace" in kustomization:
        _set_namespace(docs, kustomization["namespace"])
    for image in kustomization.get("images", []):
        for doc in docs:
            _set_image(doc, image)
    for replacement in kustomization.get("replacements", []):
        _apply_replacement(docs, replacement)
    return docs


def _load_resource(path: Path) -> list[Doc]:
    if path.is_dir():
        return render(path)
    if not path.is_file():
        raise KustomizeError(f"resource {path} not found")
    # The JSON round trip un-shares YAML aliases (&anchor/*alias): a patch to one copy must not change the others,
    # as in kustomize, which expands aliases on reading.
    return [json.loads(json.dumps(doc)) for doc in yaml.safe_load_all(path.read_text()) if doc]


def resource_id(doc: Doc) -> str:
    meta = doc.get("metadata", {})
    return f"{doc.get('kind')}/{meta.get('namespace', '')}/{meta.get('name')}"


def _check_unique(docs: list[Doc], path: Path) -> None:
    seen: set[str] = set()
    for doc in docs:
        rid = resource_id(doc)
        if rid in seen:
            raise KustomizeError(f"{path}: resource {rid} is defined twice")
        seen.add(rid)


# ----------------------------------------------------------------------------------------------------------------
# Selection


def _group_version(doc: Doc) -> tuple[str, str]:
    api = str(doc.get("apiVersion", ""))
    return tuple(api.split("/", 1)) if "/" in api else ("", api)  # type: ignore[return-value]


def selects(selector: Doc, doc: Doc) -> bool:
    """kustomize selector semantics for group, version, kind, name, namespace (names are anchored regexes)."""
    unsupported = set(selector) - {"group", "version", "kind", "name", "namespace"}
    if unsupported:
        raise KustomizeError(f"selector field(s) {', '.join(sorted(unsupported))} not supported here")
    group, version = _group_version(doc)
    meta = doc.get("metadata", {})
    actual = {"group": group, "version": version, "kind": doc.get("kind", ""),
              "name": meta.get("name", ""), "namespace": meta.get("namespace", "")}
    return all(re.fullmatch(str(pattern), str(actual[key])) for key, pattern in selector.items())


# ----------------------------------------------------------------------------------------------------------------
# patches


def _apply_patch(docs: list[Doc], entry: Doc, directory: Path) -> list[Doc]:
    text = entry.get("patch")
    if text is None:
        if "path" not in entry:
            raise KustomizeError("a patches entry needs `patch` or `path`")
        text = (directory / entry["path"]).read_text()
    body = yaml.safe_load(text)
    if isinstance(body, list):
        if "target" not in entry:
            raise KustomizeError("a JSON6902 patch needs a `target`")
        targets = [doc for doc in docs if selects(entry["target"], doc)]
        if not targets:
            raise KustomizeError(f"patch target {entry['target']} matches no resource")
        for doc in targets:
            for op in body:
                json6902(doc, op)
        return docs
    if isinstance(body, dict) and body.get("$patch") == "delete":
        selector = entry.get("target") or {"kind": body.get("kind"), "name": body.get("metadata", {}).get("name")}
        kept = [doc for doc in docs if not selects(selector, doc)]
        if len(kept) == len(docs):
            raise KustomizeError(f"delete patch {selector} matches no resource")
        return kept
    raise KustomizeError("only JSON6902 patches and `$patch: delete` are supported here (no strategic merge)")


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeError(f"JSON pointer {path!r} must start with /")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _child(node: Any, key: str, path: str) -> Any:
    try:
        return node[int(key)] if isinstance(node, list) else node[key]
    except (KeyError, IndexError, ValueError, TypeError):
        raise KustomizeError(f"JSON6902 path {path!r}: {key!r} not found") from None


def json6902(doc: Doc, op: Doc) -> None:
    """Apply one RFC 6902 operation (add, remove, replace, test) in place."""
    path = op["path"]
    *parents, last = _pointer(path)
    node: Any = doc
    for key in parents:
        node = _child(node, key, path)
    kind = op["op"]
    if kind == "test":
        if _child(node, last, path) != op["value"]:
            raise KustomizeError(f"JSON6902 test failed at {path!r}")
    elif kind == "remove":
        _child(node, last, path)
        del node[int(last) if isinstance(node, list) else last]
    elif kind == "replace":
        _child(node, last, path)
        node[int(last) if isinstance(node, list) else last] = copy.deepcopy(op["value"])
    elif kind == "add":
        value = copy.deepcopy(op["value"])
        if isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), value)
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise KustomizeError(f"JSON6902 path {path!r}: parent is not a mapping or list")
    else:
        raise KustomizeError(f"JSON6902 op {kind!r} not supported here")


# ----------------------------------------------------------------------------------------------------------------
# namespace, images


def _set_namespace(docs: list[Doc], namespace: str) -> None:
    for doc in docs:
        meta = doc.setdefault("metadata", {})
        if doc.get("kind") == "Namespace":
            meta["name"] = namespace
        elif doc.get("kind") not in CLUSTER_SCOPED:
            meta["namespace"] = namespace


def image_name(image: str) -> str:
    """'reg:5000/a/b:tag@sha256:...' -> 'reg:5000/a/b' (a registry port is not a tag)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def _set_image(node: Any, image: Doc) -> None:
    if isinstance(node, list):
        for item in node:
            _set_image(item, image)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in ("containers", "initContainers") and isinstance(value, list):
            for container in value:
                if isinstance(container, dict) and image_name(str(container.get("image", ""))) == image["name"]:
                    container["image"] = _new_image(str(container["image"]), image)
        _set_image(value, image)


def _new_image(current: str, image: Doc) -> str:
    name = image.get("newName", image_name(current))
    if "digest" in image:
        return f"{name}@{image['digest']}"
    tag = image.get("newTag")
    if tag is None:
        rest = current[len(image_name(current)):]
        return name + rest
    return f"{name}:{tag}"


# ----------------------------------------------------------------------------------------------------------------
# replacements


def field_path(path: str) -> list[str]:
    """'spec.containers.[name=ray].image' -> ['spec', 'containers', '[name=ray]', 'image'] (brackets keep dots)."""
    parts = re.findall(r"\[[^\]]*\]|[^.]+", path)
    if not parts:
        raise KustomizeError(f"empty fieldPath {path!r}")
    return parts


def _step(node: Any, part: str, create: bool, path: str) -> Any:
    if part.startswith("["):
        key, _, value = part[1:-1].partition("=")
        if not isinstance(node, list):
            raise KustomizeError(f"fieldPath {path!r}: {part} needs a list")
        for item in node:
            if isinstance(item, dict) and str(item.get(key)) == value:
                return item
        raise KustomizeError(f"fieldPath {path!r}: no element {part}")
    if isinstance(node, list):
        return _child(node, part, path)
    if not isinstance(node, dict):
        raise KustomizeError(f"fieldPath {path!r}: {part!r} under a scalar")
    if part not in node:
        if not create:
            raise KustomizeError(f"fieldPath {path!r}: {part!r} not found")
        node[part] = {}
    return node[part]


def get_field(doc: Doc, path: str) -> Any:
    node: Any = doc
    for part in field_path(path):
        node = _step(node, part, False, path)
    return node


def set_field(doc: Doc, path: str, value: Any, create: bool) -> None:
    *parents, last = field_path(path)
    node: Any = doc
    for part in parents:
        node = _step(node, part, create, path)
    if isinstance(node, list):
        node[int(last)] = copy.deepcopy(value)
    elif isinstance(node, dict):
        if last not in node and not create:
            raise KustomizeError(f"fieldPath {path!r}: {last!r} not found (set options.create)")
        node[last] = copy.deepcopy(value)
    else:
        raise KustomizeError(f"fieldPath {path!r}: parent is a scalar")


def _apply_replacement(docs: list[Doc], replacement: Doc) -> None:
    source = dict(replacement["source"])
    source_path = source.pop("fieldPath", "metadata.name")
    sources = [doc for doc in docs if selects(source, doc)]
    if len(sources) != 1:
        raise KustomizeError(f"replacement source {source} matches {len(sources)} resources, needs exactly 1")
    value = get_field(sources[0], source_path)
    for target in replacement["targets"]:
        create = bool(target.get("options", {}).get("create", False))
        matched = [doc for doc in docs if selects(target["select"], doc)]
        for doc in matched:
            for path in target["fieldPaths"]:
                set_field(doc, path, value, create)
