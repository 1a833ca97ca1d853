"""The one vocabulary of edits to a design spec, and its one applier.

Validation's fixes (a report's ``fix``: a label and a list of edits) and feedback's suggestions (one edit
each) are both edits. The editor carries a fix out through ``POST /api/v1/designs/edit/``
(``services.spec_edit``), feedback's Apply through ``feedback.services.suggestion_apply``; both end here.
Pure Python: no database, no torch. docs/contracts.md section 5 ("Edits") is the reference::

    {"op": "set_hyperparameter", "name": "learning_rate", "value": 0.0003}
    {"op": "set_layer_param", "layer": "conv2", "param": "out_channels", "value": 64}
    {"op": "insert_layer", "after": "fc1", "layer": {"type": "Dropout", "p": 0.3}}   # or "before"
    {"op": "remove_layer", "layer": "dropout1"}
    {"op": "add_preprocessing", "transform": {"type": "RandomHorizontalFlip"}}

``apply_edit`` works on any spec the diagnosis reads (normalised, or the original front end's with ids);
the result is not validated: save it (or normalise it) to learn whether it still reads.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from django.utils.translation import gettext

from designs.catalog import INFERRED_PARAMS, LAYERS, SHAPE_KEEPING_LAYERS

OPS = ("set_hyperparameter", "set_layer_param", "insert_layer", "remove_layer", "add_preprocessing")
# Settings that change a layer's output shape: setting one clears the inferred sizes after the layer.
SHAPE_PARAMS = frozenset(
    {"out_channels", "out_features", "kernel_size", "stride", "padding", "dilation", "output_size"}
)
MAX_EDITS = 16  # edits in one request: a fix has at most two
MAX_EDIT_DEPTH = 16  # nesting of an edit's JSON (a Residual layer inside a Residual inside ...)


class EditError(ValueError):
    """The edit does not fit this spec (the layer is gone) or is not an edit (unknown op, missing field)."""


# --- reading a spec's layers (the diagnosis reads specs with these too) -------------------------------


def layer_name(layer: dict) -> str | None:
    """A layer's name: ``name``, or ``id`` in the original front end's specs."""
    return layer.get("name") or layer.get("id")


def walk_layers(layers: list) -> Iterator[dict]:
    """Every layer in document order, the inner layers of a Residual block right after the block."""
    stack = [iter(layers)]
    while stack:
        layer = next(stack[-1], None)
        if layer is None:
            stack.pop()
            continue
        if not isinstance(layer, dict):
            continue
        yield layer
        inner = layer.get("layers")
        if isinstance(inner, list):
            stack.append(iter(inner))


def locate_layer(layers: list, name: str | None) -> tuple[list[dict], int] | None:
    """(the list that holds the first layer named ``name`` in document order, its index there), or None."""
    stack = [(layers, iter(enumerate(layers)))]
    while stack:
        container, steps = stack[-1]
        step = next(steps, None)
        if step is None:
            stack.pop()
            continue
        index, layer = step
        if not isinstance(layer, dict):
            continue
        if layer_name(layer) == name:
            return container, index
        inner = layer.get("layers")
        if isinstance(inner, list):
            stack.append((inner, iter(enumerate(inner))))
    return None


def find_layer(layers: list, name: str | None) -> dict | None:
    located = locate_layer(layers, name)
    return located[0][located[1]] if located else None


def _layers(spec: dict) -> list:
    layers = spec.get("layers")
    return layers if isinstance(layers, list) else []


# --- the applier ----------------------------------------------------------------------------------------


def apply_edits(spec: dict, edits: list[dict]) -> dict:
    """``apply_edit`` for each edit in order (a fix's list); ``spec`` is left untouched."""
    for edit in edits:
        spec = apply_edit(spec, edit)
    return spec


def apply_edit(spec: dict, edit: dict) -> dict:
    """Return a new spec with the edit carried out; ``spec`` is left untouched. Raises ``EditError``.

    Layers added or changed in a way that can change shapes clear the inferred sizes (in_channels,
    in_features, num_features) of every layer after them, so that validation infers them again
    instead of reporting a mismatch.
    """
    check_edit(edit)
    new = copy.deepcopy(spec) if isinstance(spec, dict) else {}
    op = edit["op"]
    if op == "set_hyperparameter":
        hyperparameters = new.get("hyperparameters")
        if not isinstance(hyperparameters, dict):
            hyperparameters = new["hyperparameters"] = {}
        hyperparameters[edit["name"]] = copy.deepcopy(edit.get("value"))
    elif op == "add_preprocessing":
        transform = copy.deepcopy(edit["transform"])
        current = new.get("preprocessing")
        steps = [
            t
            for t in (current if isinstance(current, list) else [])
            if not isinstance(t, dict) or t.get("type") != transform["type"]
        ]
        # Augment before Normalize, as torchvision pipelines do (ColorJitter expects [0, 1] pixels).
        at = next(
            (i for i, t in enumerate(steps) if isinstance(t, dict) and t.get("type") == "Normalize"),
            len(steps),
        )
        steps.insert(at, transform)
        new["preprocessing"] = steps
    elif op == "insert_layer":
        _insert_layer(new, edit)
    elif op == "remove_layer":
        _remove_layer(new, edit)
    else:  # set_layer_param
        name, param = edit["layer"], edit["param"]
        layer = find_layer(_layers(new), name)
        if layer is None:
            raise EditError(_gone(name))
        layer[param] = copy.deepcopy(edit.get("value"))
        if param in SHAPE_PARAMS:
            _clear_inferred_after(new, name)
    return new


def check_edit(edit: Any) -> None:
    """Raise ``EditError`` unless ``edit`` is one of the vocabulary's edits with its fields."""
    if not isinstance(edit, dict) or not isinstance(edit.get("op"), str):
        raise EditError(gettext("An edit is an object with an op, one of %(ops)s.") % {"ops": ", ".join(OPS)})
    if _depth(edit) > MAX_EDIT_DEPTH:
        raise EditError(gettext("The JSON is nested too deeply."))
    op = edit["op"]
    if op not in OPS:
        raise EditError(gettext("Unknown suggestion: %(op)s") % {"op": _short(op)})
    if op == "set_hyperparameter" and not _text(edit.get("name")):
        raise EditError(gettext("The suggestion names no hyperparameter."))
    if op in ("set_layer_param", "remove_layer") and not _text(edit.get("layer")):
        raise EditError(gettext("The edit names no layer."))
    if op == "set_layer_param" and not _text(edit.get("param")):
        raise EditError(gettext("The edit names no setting of %(name)s.") % {"name": edit["layer"]})
    if op == "insert_layer":
        anchors = [key for key in ("after", "before") if key in edit]
        if len(anchors) != 1 or not _text(edit[anchors[0]]):
            raise EditError(gettext("An insert_layer edit names one layer, after or before which it goes."))
        layer = edit.get("layer")
        if not isinstance(layer, dict) or not _text(layer.get("type")):
            raise EditError(gettext("The suggestion names no layer type."))
    if op == "add_preprocessing":
        transform = edit.get("transform")
        if not isinstance(transform, dict) or not _text(transform.get("type")):
            raise EditError(gettext("The suggestion names no transform."))


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _depth(value: Any) -> int:
    """How deep lists and objects nest in ``value``, counted without recursion (an attacker picks it)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth > MAX_EDIT_DEPTH:
                return depth
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _short(value: Any) -> str:
    """A value from the request, cut short for a message."""
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _gone(name: Any) -> str:
    return gettext("The design has no layer named %(name)s any more.") % {"name": _short(name)}


def _insert_layer(spec: dict, edit: dict) -> None:
    anchor = edit.get("after") or edit.get("before")
    located = locate_layer(_layers(spec), anchor)
    if located is None:
        raise EditError(_gone(anchor))
    container, index = located
    key = "id" if "id" in container[index] and "name" not in container[index] else "name"
    layer = copy.deepcopy(edit["layer"])
    given = layer.pop("name", None) or layer.pop("id", None)
    layer.pop("id", None)
    taken = {layer_name(existing) for existing in walk_layers(_layers(spec))}
    # A fix names its new layers (validation picked names that are free); a suggestion leaves it to us.
    new_name = given if isinstance(given, str) and given not in taken else _unique_name(taken, layer["type"])
    layer = {"type": layer.pop("type"), key: new_name, **layer}
    if "after" in edit:
        container.insert(index + 1, layer)
        following = container[index + 2] if index + 2 < len(container) else None
        # The next layer read the anchor explicitly: it now reads the new layer, which reads the anchor.
        if isinstance(following, dict) and following.get("input") == anchor:
            following["input"] = new_name
    else:
        target = container[index]
        if "input" in target:
            layer["input"] = target.pop("input")
        container.insert(index, layer)
    if layer["type"] not in SHAPE_KEEPING_LAYERS:
        _clear_inferred_after(spec, new_name)


def _remove_layer(spec: dict, edit: dict) -> None:
    name = edit["layer"]
    located = locate_layer(_layers(spec), name)
    if located is None:
        raise EditError(_gone(name))
    container, index = located
    removed = container[index]
    source = removed.get("input")
    if source is None:
        source = layer_name(container[index - 1]) if index > 0 else "x"
    # Whoever read the removed layer reads what it read.
    for layer in walk_layers(_layers(spec)):
        wired = layer.get("input")
        if wired == name:
            layer["input"] = source
        elif isinstance(wired, list) and name in wired:
            layer["input"] = [source if w == name else w for w in wired]
    previous = layer_name(container[index - 1]) if index > 0 else None
    del container[index]
    following = container[index] if index < len(container) else None
    if isinstance(following, dict) and following.get("input") == previous and "input" not in removed:
        following.pop("input", None)  # it was rewired to the layer right before it: implicit again
    if removed.get("type") not in SHAPE_KEEPING_LAYERS:
        if previous is not None:
            _clear_inferred_after(spec, previous)
        else:
            for layer in walk_layers(container):
                for param in INFERRED_PARAMS:
                    layer.pop(param, None)


def _clear_inferred_after(spec: dict, name: str) -> None:
    seen = False
    for layer in walk_layers(_layers(spec)):
        if seen:
            for param in INFERRED_PARAMS:
                layer.pop(param, None)
        if layer_name(layer) == name:
            seen = True


def _unique_name(taken: set, layer_type: str) -> str:
    """The catalog's automatic name for the type (conv1, dropout2, ...) that no layer has yet."""
    entry = LAYERS.get(layer_type)
    prefix = entry.prefix if entry else layer_type.lower()
    n = 1
    while f"{prefix}{n}" in taken:
        n += 1
    return f"{prefix}{n}"


# --- labels ---------------------------------------------------------------------------------------------


def show_value(value: Any) -> str:
    """A value as a label shows it: 0.0003, not 0.00030000000000000003."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def layer_label(layer: dict) -> str:
    """``Dropout(p=0.3)``: a layer or transform with its settings, as a button shows it."""
    params = ", ".join(
        f"{k}={show_value(v)}" for k, v in layer.items() if k not in ("type", "name", "id", "input")
    )
    return f"{layer.get('type')}({params})"


def describe_edit(edit: dict) -> str:
    """One line for the Apply button, in the active language."""
    op = edit.get("op")
    if op == "set_hyperparameter":
        return gettext("Set %(name)s to %(value)s") % {
            "name": edit.get("name"),
            "value": show_value(edit.get("value")),
        }
    if op == "insert_layer":
        layer = layer_label(edit.get("layer") or {})
        if "before" in edit:
            return gettext("Add %(layer)s before %(anchor)s") % {"layer": layer, "anchor": edit["before"]}
        return gettext("Add %(layer)s after %(anchor)s") % {"layer": layer, "anchor": edit.get("after")}
    if op == "remove_layer":
        return gettext("Remove %(layer)s") % {"layer": edit.get("layer")}
    if op == "set_layer_param":
        return gettext("Set %(param)s of %(layer)s to %(value)s") % {
            "param": edit.get("param"),
            "layer": edit.get("layer"),
            "value": show_value(edit.get("value")),
        }
    if op == "add_preprocessing":
        return gettext("Add %(transform)s to the training preprocessing") % {
            "transform": layer_label(edit.get("transform") or {})
        }
    return str(op)
