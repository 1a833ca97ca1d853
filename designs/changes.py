"""What changed between two versions of a design, as a beginner reads it: layers added, removed or
changed (setting by setting, before → after), preprocessing steps, and hyperparameters.

Pure functions on normalised specs (docs/contracts.md section 5). The compare page of two runs uses
them to show what a feedback suggestion did; the text diff of designs.views.design_diff shows lines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from designs.catalog import INFERRED_PARAMS


@dataclass
class Change:
    name: str  # a layer name, a transform type, a hyperparameter
    before: object = None
    after: object = None

    @property
    def before_text(self) -> str:
        return show(self.before)

    @property
    def after_text(self) -> str:
        return show(self.after)


@dataclass
class LayerChange:
    kind: str  # "added" | "removed" | "changed"
    name: str
    type: str
    settings: str = ""  # added / removed: the layer's settings in one line
    anchor: str = ""  # added: the layer it follows ("" = the model input)
    changes: list[Change] = field(default_factory=list)  # changed: setting by setting


@dataclass
class SpecChanges:
    layers: list[LayerChange] = field(default_factory=list)
    preprocessing: list[LayerChange] = field(default_factory=list)
    hyperparameters: list[Change] = field(default_factory=list)
    other: list[Change] = field(default_factory=list)  # model_name, dataset

    @property
    def empty(self) -> bool:
        return not (self.layers or self.preprocessing or self.hyperparameters or self.other)


def show(value: object) -> str:
    """A setting's value as the editor writes it: 0.3, true, [3, 3], "same"; — for unset."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _flat_layers(layers: list, parent: str = "") -> list[tuple[str, dict, str]]:
    """(name, layer, the name of the layer before it in its list) for every layer, Residual insides too."""
    out = []
    previous = parent
    for layer in layers or []:
        if not isinstance(layer, dict):
            continue
        name = str(layer.get("name") or layer.get("id") or "?")
        out.append((name, layer, previous))
        if isinstance(layer.get("layers"), list):
            out += _flat_layers(layer["layers"], parent=name)
        previous = name
    return out


def _settings(layer: dict) -> dict:
    # Sizes validation computes from the shape flowing in: an edit that changes shapes clears them, so a
    # difference there is a consequence of the change, not a change the user made.
    return {
        k: v
        for k, v in layer.items()
        if k not in ("type", "name", "id", "layers") and k not in INFERRED_PARAMS
    }


def _settings_line(layer: dict) -> str:
    return ", ".join(f"{k}={show(v)}" for k, v in _settings(layer).items() if v is not None)


def _layer_changes(before: list, after: list) -> list[LayerChange]:
    old = {name: layer for name, layer, _prev in _flat_layers(before)}
    new = _flat_layers(after)
    new_names = {name for name, _layer, _prev in new}
    changes = []
    for name, layer, previous in new:
        kind = str(layer.get("type", ""))
        if name not in old:
            changes.append(LayerChange("added", name, kind, settings=_settings_line(layer), anchor=previous))
            continue
        was = old[name]
        settings_before, settings_after = _settings(was), _settings(layer)
        diffs = []
        if was.get("type") != layer.get("type"):
            diffs.append(Change("type", was.get("type"), layer.get("type")))
        for key in list(settings_before) + [k for k in settings_after if k not in settings_before]:
            if settings_before.get(key) != settings_after.get(key):
                diffs.append(Change(key, settings_before.get(key), settings_after.get(key)))
        if diffs:
            changes.append(LayerChange("changed", name, kind, changes=diffs))
    for name, layer, _previous in _flat_layers(before):
        if name not in new_names:
            changes.append(
                LayerChange("removed", name, str(layer.get("type", "")), settings=_settings_line(layer))
            )
    return changes


def _preprocessing_changes(before: list, after: list) -> list[LayerChange]:
    """Steps by type (a spec has one step of a type; add_preprocessing replaces a step of the same type)."""
    old = {str(s.get("type")): s for s in before or [] if isinstance(s, dict)}
    new = {str(s.get("type")): s for s in after or [] if isinstance(s, dict)}
    changes = []
    for kind, step in new.items():
        if kind not in old:
            changes.append(LayerChange("added", kind, kind, settings=_settings_line(step)))
        else:
            a, b = _settings(old[kind]), _settings(step)
            diffs = [Change(k, a.get(k), b.get(k)) for k in {**a, **b} if a.get(k) != b.get(k)]
            if diffs:
                changes.append(LayerChange("changed", kind, kind, changes=diffs))
    for kind, step in old.items():
        if kind not in new:
            changes.append(LayerChange("removed", kind, kind, settings=_settings_line(step)))
    return changes


def spec_changes(before: dict, after: dict) -> SpecChanges:
    """Everything that differs from ``before`` to ``after``, in the order of the ``after`` design."""
    hp_before = before.get("hyperparameters") or {}
    hp_after = after.get("hyperparameters") or {}
    return SpecChanges(
        layers=_layer_changes(before.get("layers") or [], after.get("layers") or []),
        preprocessing=_preprocessing_changes(
            before.get("preprocessing") or [], after.get("preprocessing") or []
        ),
        hyperparameters=[
            Change(key, hp_before.get(key), hp_after.get(key))
            for key in list(hp_before) + [k for k in hp_after if k not in hp_before]
            if hp_before.get(key) != hp_after.get(key)
        ],
        other=[
            Change(key, before.get(key), after.get(key))
            for key in ("model_name", "dataset")
            if before.get(key) != after.get(key)
        ],
    )
