"""Validation of a design spec: normalisation, graph checks and exact shape inference on the meta device.

Two tiers, on purpose:

1. ``normalise(raw)`` turns whatever the client sent (the original BuildX front end's JSON included) into the
   stored normalised form, or raises ``SpecError`` with field-level messages (``layers[2].kernel_size``):
   unknown keys, wrong types, values out of range, unknown layer types. The API answers these with a 400.
2. ``analyse(spec)`` builds the report: per-layer shapes, parameters, MACs and memory from PyTorch itself
   (modules built on the meta device, a meta tensor run through them), and the errors and warnings a
   beginner can act on (graph problems, shapes that do not fit, inferred values given wrong). A design
   with errors still gets a report (HTTP 200, ``valid: false``) so the editor can show them in place.

docs/contracts.md section 5 documents the report format.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import keyword
import math
import re
from typing import Any

import torch
from django.utils.translation import gettext as _
from torch import nn

from designs import sequence
from designs.catalog import (
    CORPORA,
    DATASETS,
    HYPERPARAMETER_BY_NAME,
    IGNORED_HYPERPARAMETERS,
    LAYERS,
    LIMITS,
    REQUIRED,
    TASK_HYPERPARAMETERS,
    TASK_IMAGE,
    TASK_LM,
    TASKS,
    TRANSFORMS,
    CorpusFacts,
    DatasetFacts,
    LayerType,
    Param,
    corpus_lookup,
    dataset_lookup,
    lm_vocab_size,
)
from designs.limits import NO_LIMITS, TrainingLimits, limit_issues, training_limits
from designs.sequence import fmt_shape

# The model input is named "x" (as in the original BuildX front end, and in the compiled forward()).
MODEL_INPUT = "x"
INPUT_ALIASES = {"x", "input", "inputs"}
# Names a layer cannot take: Python keywords, nn.Module's own attributes and the compiled script's locals.
RESERVED_NAMES = frozenset(
    {name for name in dir(nn.Module) if not name.startswith("__")}
    | {"x", "inputs", "self", "torch", "nn", "rt", "math", "layers", "shortcut", "body", "super", "F", "idx"}
)
BYTES_PER_VALUE = 4  # float32 activations and weights
LARGE_LINEAR_PARAMS = 4_000_000
MAX_ERROR_FIELDS = 100  # a spec with thousands of bad layers gets the first hundred problems, not megabytes
TOP_KEYS = ("model_name", "task", "dataset", "preprocessing", "layers", "hyperparameters")


class SpecError(Exception):
    """The spec cannot be read: ``fields`` maps a path (``layers[2].kernel_size``) to messages."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in fields.items()))
        self.fields = fields


class _FieldErrors:
    def __init__(self) -> None:
        self.fields: dict[str, list[str]] = {}

    def add(self, path: str, message: str) -> None:
        if len(self.fields) < MAX_ERROR_FIELDS or path in self.fields:
            self.fields.setdefault(path or "spec", []).append(str(message))

    def __bool__(self) -> bool:
        return bool(self.fields)


def _show(value: Any) -> str:
    """A short, safe rendering of a user's value for a message."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


# --- Tier 1: normalisation ---------------------------------------------------------------------------


def _check_value(param: Param, value: Any, *, who: str, path: str, errors: _FieldErrors) -> tuple[bool, Any]:
    """Check one value against its catalog entry; return (ok, normalised value)."""
    kind, lo, hi = param.kind, param.min, param.max
    ctx = {"who": who, "field": param.name, "value": _show(value), "min": lo, "max": hi}

    if value is None:
        if param.nullable:
            return True, None
        errors.add(path, _("%(who)s: %(field)s needs a value.") % ctx)
        return False, None

    def number(v: Any, *, whole: bool) -> tuple[bool, Any]:
        if isinstance(v, str):
            errors.add(path, _("%(who)s: %(field)s must be a number, not the text %(value)s.") % ctx)
            return False, None
        if not _is_number(v) or (whole and isinstance(v, float) and not v.is_integer()):
            msg = (
                _("%(who)s: %(field)s must be a whole number; got %(value)s.")
                if whole
                else _("%(who)s: %(field)s must be a number; got %(value)s.")
            )
            errors.add(path, msg % ctx)
            return False, None
        v = int(v) if whole else float(v)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            errors.add(
                path, _("%(who)s: %(field)s must be between %(min)s and %(max)s; got %(value)s.") % ctx
            )
            return False, None
        return True, v

    if kind == "int":
        return number(value, whole=True)
    if kind == "float":
        return number(value, whole=False)
    if kind == "bool":
        if isinstance(value, bool):
            return True, value
        errors.add(path, _("%(who)s: %(field)s must be true or false; got %(value)s.") % ctx)
        return False, None
    if kind == "choice":
        for choice in param.choices:
            if isinstance(choice, str) and isinstance(value, str) and value.lower() == choice:
                return True, choice
            if _is_int(choice) and _is_int(value) and value == choice:
                return True, choice
        ctx["choices"] = ", ".join(str(c) for c in param.choices)
        errors.add(path, _("%(who)s: %(field)s must be one of %(choices)s; got %(value)s.") % ctx)
        return False, None
    if kind in ("int_pair", "padding", "size"):
        if kind == "padding" and isinstance(value, str):
            if value.lower() in param.choices:
                return True, value.lower()
            errors.add(
                path,
                _(
                    '%(who)s: %(field)s must be a whole number, [height, width], "same" or "valid"; '
                    "got %(value)s."
                )
                % ctx,
            )
            return False, None
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                errors.add(
                    path,
                    _("%(who)s: %(field)s must be one number or two ([height, width]); got %(value)s.") % ctx,
                )
                return False, None
            parts = []
            for item in value:
                ok, v = number(item, whole=True)
                if not ok:
                    return False, None
                parts.append(v)
            if kind == "size":
                return True, parts
            return True, parts[0] if parts[0] == parts[1] else parts
        ok, v = number(value, whole=True)
        if not ok:
            return False, None
        return True, [v, v] if kind == "size" else v
    if kind == "float_list":
        items = value if isinstance(value, (list, tuple)) else [value]
        if not 1 <= len(items) <= 4:
            errors.add(path, _("%(who)s: %(field)s must have one value per channel; got %(value)s.") % ctx)
            return False, None
        out = []
        for item in items:
            ok, v = number(item, whole=False)
            if not ok:
                return False, None
            out.append(v)
        return True, out
    if kind == "shape":
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            errors.add(path, _("%(who)s: %(field)s must be [channels, height, width]; got %(value)s.") % ctx)
            return False, None
        out = []
        for item in value:
            ctx["min"], ctx["max"] = 1, 4096
            if not _is_int(item) or not 1 <= item <= 4096:
                errors.add(
                    path,
                    _("%(who)s: %(field)s must be three whole numbers between 1 and 4096; got %(value)s.")
                    % ctx,
                )
                return False, None
            out.append(item)
        return True, out
    raise AssertionError(f"unknown parameter kind {kind}")  # a catalog mistake, not a user's


def _unknown_key(who: str, key: str, known: list[str], path: str, errors: _FieldErrors) -> None:
    ctx = {"who": who, "key": _show(key)}
    close = difflib.get_close_matches(str(key), known, n=1)
    if close:
        ctx["close"] = close[0]
        errors.add(path, _("%(who)s has no setting %(key)s. Did you mean %(close)s?") % ctx)
    elif known:
        ctx["known"] = ", ".join(known)
        errors.add(path, _("%(who)s has no setting %(key)s; it takes: %(known)s.") % ctx)
    else:
        errors.add(path, _("%(who)s takes no settings; remove %(key)s.") % ctx)


def _sanitise_name(raw: Any) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", str(raw).strip())
    if not name or name[0].isdigit() or name[0] == "_":
        name = f"layer_{name}"
    if keyword.iskeyword(name) or name in RESERVED_NAMES:
        name = f"{name}_"
    return name


class _Normaliser:
    def __init__(self, task: str = TASK_IMAGE) -> None:
        self.task = task
        self.errors = _FieldErrors()
        self.count = 0
        self.names: dict[str, str] = {}  # normalised name -> path
        self.aliases: dict[str, str] = {}  # original id or name -> normalised name
        self.unnamed: list[tuple[dict, LayerType]] = []
        self.too_many = False

    def layers(self, raw: Any, *, path: str, depth: int) -> list[dict]:
        if not isinstance(raw, list):
            self.errors.add(
                path, _("layers must be a list of layers; got %(value)s.") % {"value": _show(raw)}
            )
            return []
        if depth > LIMITS["max_depth"]:
            self.errors.add(
                path,
                _("Residual blocks are nested more than %(n)s deep; flatten the design.")
                % {"n": LIMITS["max_depth"]},
            )
            return []
        out: list[dict] = []
        for index, item in enumerate(raw):
            self.count += 1
            if self.count > LIMITS["max_layers"]:
                if not self.too_many:
                    self.too_many = True
                    self.errors.add(
                        "layers",
                        _("A design can have at most %(n)s layers (blocks' inner layers included).")
                        % {"n": LIMITS["max_layers"]},
                    )
                return out
            layer = self.layer(item, path=f"{path}[{index}]", depth=depth)
            if layer is not None:
                out.append(layer)
        return out

    def layer(self, raw: Any, *, path: str, depth: int) -> dict | None:
        if not isinstance(raw, dict):
            self.errors.add(
                path, _("Each layer must be an object with a type; got %(value)s.") % {"value": _show(raw)}
            )
            return None
        raw = dict(raw)
        nested = raw.pop("params", None)
        if nested is not None:
            if not isinstance(nested, dict):
                self.errors.add(f"{path}.params", _("params must be an object of settings."))
            else:
                for key, value in nested.items():
                    if key in raw:
                        self.errors.add(
                            f"{path}.{key}",
                            _("%(key)s is given twice (beside type and inside params).")
                            % {"key": _show(key)},
                        )
                    raw[key] = value
        type_name = raw.pop("type", None)
        given_name = raw.pop("name", None)
        given_id = raw.pop("id", None)
        who = str(given_name if given_name is not None else given_id if given_id is not None else path)[:64]
        if not isinstance(type_name, str) or not type_name:
            self.errors.add(
                f"{path}.type", _("%(who)s: type is missing; pick a layer from the catalog.") % {"who": who}
            )
            return None
        layer_type = LAYERS.get(type_name) or next(
            (lt for name, lt in LAYERS.items() if name.lower() == type_name.lower()), None
        )
        if layer_type is None:
            close = difflib.get_close_matches(type_name, list(LAYERS), n=1, cutoff=0.5)
            ctx = {"who": who, "type": _show(type_name), "close": close[0] if close else ""}
            msg = (
                _("%(who)s: there is no layer type %(type)s. Did you mean %(close)s?")
                if close
                else _("%(who)s: there is no layer type %(type)s; see the catalog for the layers there are.")
            )
            self.errors.add(f"{path}.type", msg % ctx)
            return None
        who = f"{who} ({layer_type.type})"

        out: dict[str, Any] = {"type": layer_type.type}
        name = self.name(given_name, given_id, path=path, who=who)
        if name is not None:
            out["name"] = name
        else:
            self.unnamed.append((out, layer_type))

        if depth > 0 and layer_type.type in ("Input", "Add", "Concat"):
            self.errors.add(
                f"{path}.type",
                _("%(who)s cannot be inside a Residual block: its layers run one after the other.")
                % {"who": who},
            )
        raw_input = raw.pop("input", None)
        if raw_input is not None:
            if depth > 0:
                self.errors.add(
                    f"{path}.input",
                    _("%(who)s: layers inside a Residual block run in order; remove input.") % {"who": who},
                )
            else:
                refs = self.refs(raw_input, path=f"{path}.input", who=who)
                if refs is not None:
                    out["input"] = refs

        for param in layer_type.params:
            key_path = f"{path}.{param.name}"
            if not param.for_task(self.task):
                # tie_weights is a language model's; an image design's Linear never has it. The editor
                # shows a block's every setting and sends the default (off): that is not a mistake.
                if param.name in raw and raw[param.name] == param.default:
                    raw.pop(param.name)
                continue
            if param.kind == "layers":
                value = raw.pop(param.name, None)
                if value is None:
                    self.errors.add(
                        key_path, _("%(who)s: list the block's inner layers in layers.") % {"who": who}
                    )
                    continue
                out["layers"] = self.layers(value, path=key_path, depth=depth + 1)
                continue
            if param.name in raw:
                value = raw.pop(param.name)
                if value is None and param.inferred:
                    continue
                ok, value = _check_value(param, value, who=who, path=key_path, errors=self.errors)
                if ok:
                    out[param.name] = value
            elif param.inferred:
                continue
            elif param.default is REQUIRED:
                self.errors.add(
                    key_path, _("%(who)s: %(field)s is required.") % {"who": who, "field": param.name}
                )
            else:
                out[param.name] = list(param.default) if isinstance(param.default, tuple) else param.default
        for key in raw:
            _unknown_key(
                who,
                key,
                [p.name for p in layer_type.params if p.for_task(self.task)] + ["name", "input"],
                f"{path}.{key}",
                self.errors,
            )
        return out

    def name(self, given_name: Any, given_id: Any, *, path: str, who: str) -> str | None:
        raw = given_name if given_name is not None else given_id
        if raw is None:
            return None
        if not isinstance(raw, (str, int)) or isinstance(raw, bool):
            self.errors.add(
                f"{path}.name",
                _("%(who)s: a name must be text; got %(value)s.") % {"who": who, "value": _show(raw)},
            )
            return None
        if len(str(raw)) > LIMITS["max_name_length"]:
            self.errors.add(
                f"{path}.name",
                _("%(who)s: a name can be at most %(n)s characters long.")
                % {"who": who[:20], "n": LIMITS["max_name_length"]},
            )
            return None
        name = _sanitise_name(raw)
        if name in self.names:
            self.errors.add(
                f"{path}.name",
                _("%(who)s: the name %(name)s is already taken by %(other)s; names must be unique.")
                % {"who": who, "name": name, "other": self.names[name]},
            )
            return None
        self.names[name] = path
        aliases = {str(raw), str(given_name)} | ({str(given_id)} if given_id is not None else set())
        for alias in aliases - {"None"}:
            self.aliases.setdefault(alias, name)
        return name

    def refs(self, raw: Any, *, path: str, who: str) -> list[str] | str | None:
        items = raw if isinstance(raw, list) else [raw]
        if not items or len(items) > LIMITS["max_inputs"]:
            self.errors.add(
                path,
                _("%(who)s: input must name between 1 and %(n)s layers.")
                % {"who": who, "n": LIMITS["max_inputs"]},
            )
            return None
        out = []
        for item in items:
            if (
                not isinstance(item, (str, int))
                or isinstance(item, bool)
                or len(str(item)) > LIMITS["max_name_length"]
            ):
                self.errors.add(
                    path,
                    _(
                        '%(who)s: input must be "x" (the model input), a layer\'s name, or a list of '
                        "names; got %(value)s."
                    )
                    % {"who": who, "value": _show(item)},
                )
                return None
            out.append(str(item))
        return out

    def finish(self, layers: list[dict]) -> None:
        """Give unnamed layers a name (conv1, conv2, ...) and rewrite input references to normalised names."""
        counters: dict[str, int] = {}
        for layer, layer_type in self.unnamed:
            while True:
                counters[layer_type.prefix] = counters.get(layer_type.prefix, 0) + 1
                candidate = f"{layer_type.prefix}{counters[layer_type.prefix]}"
                if candidate not in self.names:
                    break
            self.names[candidate] = "auto"
            # Keep "type" first and "name" second: the stored spec reads like what was sent.
            items = list(layer.items())
            layer.clear()
            layer.update([items[0], ("name", candidate), *items[1:]])
        for layer in layers:
            refs = layer.get("input")
            if refs is None:
                continue
            resolved = [MODEL_INPUT if r.lower() in INPUT_ALIASES else self.aliases.get(r, r) for r in refs]
            layer["input"] = resolved[0] if len(resolved) == 1 else resolved
        # An input that names the previous layer (or "x" on the first) is the default: drop it, so the same
        # design has one normalised form and one hash.
        for index, layer in enumerate(layers):
            previous = layers[index - 1]["name"] if index else MODEL_INPUT
            if layer.get("input") == previous and LAYERS[layer["type"]].inputs == "one":
                del layer["input"]


def _normalise_params(
    owner: dict, params: tuple[Param, ...], *, who: str, path: str, errors: _FieldErrors
) -> dict:
    out: dict[str, Any] = {}
    raw = dict(owner)
    for param in params:
        key_path = f"{path}.{param.name}" if path else param.name
        if param.name in raw:
            ok, value = _check_value(param, raw.pop(param.name), who=who, path=key_path, errors=errors)
            if ok:
                out[param.name] = value
        elif param.default is REQUIRED:
            errors.add(key_path, _("%(who)s: %(field)s is required.") % {"who": who, "field": param.name})
        else:
            out[param.name] = list(param.default) if isinstance(param.default, tuple) else param.default
    for key in raw:
        _unknown_key(who, key, [p.name for p in params], f"{path}.{key}" if path else str(key), errors)
    return out


def normalise(raw: Any) -> dict:
    """Return the normalised spec (what a DesignVersion stores), or raise SpecError naming each bad field."""
    errors = _FieldErrors()
    if not isinstance(raw, dict):
        raise SpecError(
            {"spec": [_("A design must be a JSON object with layers, a dataset and hyperparameters.")]}
        )
    for key in raw:
        if key not in TOP_KEYS:
            _unknown_key(_("The design"), key, list(TOP_KEYS), str(key)[:64], errors)

    task = raw.get("task", TASK_IMAGE)
    if task not in TASKS:
        errors.add(
            "task",
            _("task must be one of %(names)s; got %(value)s.")
            % {"names": ", ".join(TASKS), "value": _show(task)},
        )
        task = TASK_IMAGE
    model_name = raw.get("model_name", "MyModel")
    if not isinstance(model_name, str) or not model_name.strip():
        errors.add("model_name", _("model_name must be a non-empty text."))
    elif len(model_name) > LIMITS["max_model_name_length"]:
        errors.add(
            "model_name",
            _("model_name can be at most %(n)s characters long.") % {"n": LIMITS["max_model_name_length"]},
        )

    dataset = raw.get("dataset")
    lookup = corpus_lookup if task == TASK_LM else dataset_lookup
    info = lookup(dataset) if isinstance(dataset, str) and len(dataset) < 64 else None
    if info is None:
        names = CORPORA if task == TASK_LM else DATASETS
        errors.add(
            "dataset",
            _("dataset must be one of %(names)s; got %(value)s.")
            % {"names": ", ".join(names), "value": _show(dataset)},
        )

    preprocessing: list[dict] = []
    raw_pre = raw.get("preprocessing", [])
    if task == TASK_LM and raw_pre:
        errors.add("preprocessing", _("A language model has no image preprocessing; remove preprocessing."))
    elif not isinstance(raw_pre, list):
        errors.add("preprocessing", _("preprocessing must be a list of transforms."))
    elif len(raw_pre) > LIMITS["max_preprocessing"]:
        errors.add(
            "preprocessing",
            _("preprocessing can have at most %(n)s transforms.") % {"n": LIMITS["max_preprocessing"]},
        )
    else:
        for index, item in enumerate(raw_pre):
            path = f"preprocessing[{index}]"
            if isinstance(item, str):
                item = {"type": item}
            if not isinstance(item, dict) or not isinstance(item.get("type"), str):
                errors.add(
                    path,
                    _("Each transform must be an object with a type; got %(value)s.")
                    % {"value": _show(item)},
                )
                continue
            item = dict(item)
            type_name = item.pop("type")
            nested = item.pop("params", None)
            if isinstance(nested, dict):
                item.update(nested)
            transform = TRANSFORMS.get(type_name) or next(
                (t for name, t in TRANSFORMS.items() if name.lower() == type_name.lower()), None
            )
            if transform is None:
                errors.add(
                    f"{path}.type",
                    _("There is no transform %(type)s; the transforms are: %(names)s.")
                    % {"type": _show(type_name), "names": ", ".join(TRANSFORMS)},
                )
                continue
            params = _normalise_params(item, transform.params, who=transform.type, path=path, errors=errors)
            preprocessing.append({"type": transform.type, **params})

    raw_hp = raw.get("hyperparameters", {})
    hyperparameters: dict[str, Any] = {}
    if not isinstance(raw_hp, dict):
        errors.add("hyperparameters", _("hyperparameters must be an object."))
    else:
        raw_hp = {k: v for k, v in raw_hp.items() if k not in IGNORED_HYPERPARAMETERS}
        hyperparameters = _normalise_params(
            raw_hp,
            TASK_HYPERPARAMETERS[task],
            who=_("hyperparameters"),
            path="hyperparameters",
            errors=errors,
        )
        if task == TASK_LM and isinstance(info, CorpusFacts) and info.tokenizer:
            # An uploaded text was tokenised when it was checked: its tokenizer is the design's.
            hyperparameters["tokenizer"] = info.tokenizer
            if info.tokenizer == "bpe":
                hyperparameters["vocab_size"] = info.vocab_size

    normaliser = _Normaliser(task)
    normaliser.errors = errors
    layers = normaliser.layers(raw.get("layers", []), path="layers", depth=0)
    if errors:
        raise SpecError(errors.fields)
    normaliser.finish(layers)
    assert info is not None  # an unknown dataset is an error above
    spec: dict[str, Any] = {"model_name": model_name.strip()}
    if task != TASK_IMAGE:
        # The default task is left out: image designs keep the normalised form (and hash) they always had.
        spec["task"] = task
    spec.update(
        dataset=info.name, preprocessing=preprocessing, layers=layers, hyperparameters=hyperparameters
    )
    return spec


def spec_task(spec: dict) -> str:
    """The task of a normalised spec (image classification unless it says otherwise)."""
    return spec.get("task", TASK_IMAGE)


def spec_hash(spec: dict) -> str:
    """sha256 of the normalised spec's canonical JSON: the same design has the same hash."""
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


# --- Tier 2: analysis on the meta device -------------------------------------------------------------


def _pair(value: Any) -> tuple[int, int]:
    return (value[0], value[1]) if isinstance(value, (list, tuple)) else (value, value)


def _torch_value(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def torch_kwargs(layer: dict, layer_type: LayerType, inferred: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The keyword arguments of nn.<type>(...) for a layer: its settings plus the inferred values, hashable."""
    kwargs = []
    for param in layer_type.params:
        if param.kind == "layers" or not param.constructor:
            continue
        value = inferred[param.name] if param.inferred else layer.get(param.name)
        kwargs.append((param.name, _torch_value(value)))
    return tuple(kwargs)


# Building modules and running meta tensors through them costs 0.05-1 ms each (BatchNorm and activations are
# the slow ones on meta); the editor validates on every change, so both are memoised: an edit re-runs only
# the layers whose settings or input shape changed.
@functools.lru_cache(maxsize=2048)
def meta_module(torch_name: str, kwargs: tuple[tuple[str, Any], ...]) -> tuple[nn.Module, int]:
    with torch.device("meta"):
        module = getattr(nn, torch_name)(**dict(kwargs))
    module.eval()
    return module, sum(p.numel() for p in module.parameters())


@functools.lru_cache(maxsize=8192)
def meta_forward(
    torch_name: str, kwargs: tuple[tuple[str, Any], ...], in_shape: tuple[int, ...]
) -> tuple[int, ...]:
    module, _params = meta_module(torch_name, kwargs)
    with torch.no_grad():
        out = module(torch.empty((1, *in_shape), device="meta"))
    return tuple(out.shape[1:])


def _projection(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The stride and out channels of the 1×1 convolution that maps in_shape onto out_shape, if one does."""
    if len(in_shape) != 3 or len(out_shape) != 3:
        return None
    for stride in range(1, 17):
        if (in_shape[1] - 1) // stride + 1 == out_shape[1] and (in_shape[2] - 1) // stride + 1 == out_shape[
            2
        ]:
            return stride, out_shape[0]
    return None


class _Analysis:
    def __init__(self, spec: dict, *, limits: TrainingLimits) -> None:
        self.spec = spec
        self.limits = limits
        self.task = spec_task(spec)
        if self.task == TASK_LM:
            corpus = corpus_lookup(spec["dataset"])  # normalise() guarantees it
            assert corpus is not None
            self.corpus: CorpusFacts = corpus
            self.vocab_size = lm_vocab_size(spec["hyperparameters"], self.corpus)
            self.context_length = int(spec["hyperparameters"]["context_length"])
        else:
            dataset = dataset_lookup(spec["dataset"])  # normalise() guarantees it
            assert dataset is not None
            self.dataset: DatasetFacts = dataset
        self.rows: list[dict] = []
        self.errors: list[dict] = []
        self.warnings: list[dict] = []
        self.names: set[str] = set()
        stack = list(spec["layers"])
        while stack:  # every name, inner layers of Residual blocks included: offered fixes must not reuse one
            layer = stack.pop()
            self.names.add(layer["name"])
            stack.extend(layer.get("layers", []))

    # --- issues

    def issue(
        self,
        kind: str,
        code: str,
        message: str,
        *,
        hint: str = "",
        layer: str | None = None,
        path: str | None = None,
        field: str | None = None,
        fix: dict | None = None,
    ) -> None:
        item: dict[str, Any] = {
            "code": code,
            "message": message,
            "hint": hint,
            "layer": layer,
            "path": path,
            "field": field,
        }
        if fix is not None:
            item["fix"] = fix
        (self.errors if kind == "error" else self.warnings).append(item)

    def error(self, code: str, message: str, **kw: Any) -> None:
        self.issue("error", code, message, **kw)

    def warning(self, code: str, message: str, **kw: Any) -> None:
        self.issue("warning", code, message, **kw)

    def free_name(self, prefix: str) -> str:
        n = 1
        while f"{prefix}{n}" in self.names:
            n += 1
        self.names.add(f"{prefix}{n}")
        return f"{prefix}{n}"

    # --- preprocessing

    def preprocess(self) -> tuple[tuple[int, ...] | None, list[dict]]:
        if self.task == TASK_LM:
            return (self.context_length,), []  # token ids, one per position
        c, h, w = self.dataset.input_shape
        rows: list[dict] = []
        for index, t in enumerate(self.spec["preprocessing"]):
            path = f"preprocessing[{index}]"
            kind = t["type"]
            if kind == "Resize":
                h, w = t["size"]
            elif kind == "CenterCrop":
                if t["size"][0] > h or t["size"][1] > w:
                    self.error(
                        "crop_too_large",
                        _("CenterCrop to %(size)s is larger than the %(h)s×%(w)s images.")
                        % {"size": fmt_shape(t["size"]), "h": h, "w": w},
                        hint=_("Crop to at most %(h)s×%(w)s, or Resize first.") % {"h": h, "w": w},
                        path=path,
                        field="size",
                    )
                    return None, rows
                h, w = t["size"]
            elif kind == "RandomCrop":
                pad = t["padding"]
                if t["size"][0] > h + 2 * pad or t["size"][1] > w + 2 * pad:
                    self.error(
                        "crop_too_large",
                        _("RandomCrop to %(size)s is larger than the %(h)s×%(w)s images with their padding.")
                        % {"size": fmt_shape(t["size"]), "h": h, "w": w},
                        hint=_(
                            "Crop to %(h)s×%(w)s and use padding for the shifts (e.g. size %(h)s, padding 4)."
                        )
                        % {"h": h, "w": w},
                        path=path,
                        field="size",
                    )
                    return None, rows
                h, w = t["size"]
            elif kind == "Grayscale":
                c = t["num_output_channels"]
            elif kind == "ColorJitter" and c == 1 and (t["saturation"] or t["hue"]):
                self.warning(
                    "jitter_on_grey",
                    _("ColorJitter's saturation and hue do nothing on grey images."),
                    hint=_("Set saturation and hue to 0, or leave them out."),
                    path=path,
                )
            elif kind == "Normalize":
                for key in ("mean", "std"):
                    if t[key] is not None and len(t[key]) not in (1, c):
                        self.error(
                            "normalize_channels",
                            _("Normalize has %(n)s %(key)s values for %(c)s-channel images.")
                            % {"n": len(t[key]), "key": key, "c": c},
                            hint=_(
                                "Give one value per channel (%(c)s), or leave %(key)s empty for the "
                                "dataset's own."
                            )
                            % {"c": c, "key": key},
                            path=path,
                            field=key,
                        )
            rows.append({"type": kind, "path": path, "output_shape": [c, h, w]})
        return (c, h, w), rows

    # --- one layer

    def rank_error(
        self, layer: dict, layer_type: LayerType, shape: tuple[int, ...], source: str, path: str
    ) -> None:
        name = layer["name"]
        if 3 in layer_type.rank:
            alternative = {"BatchNorm2d": "BatchNorm1d", "Dropout2d": "Dropout"}.get(layer_type.type)
            hint = (
                _("Use %(alt)s here, or move %(name)s before the Flatten layer.")
                % {"alt": alternative, "name": name}
                if alternative
                else _("Move %(name)s before the Flatten layer, or remove the Flatten before it.")
                % {"name": name}
            )
            self.error(
                "needs_image",
                _("%(name)s needs an image (channels × height × width) but gets %(shape)s from %(source)s.")
                % {"name": name, "shape": fmt_shape(shape), "source": source},
                hint=hint,
                layer=name,
                path=path,
            )
            return
        fix = None
        if layer_type.type == "Linear":
            fix = {
                "label": _("Add a Flatten layer before %(name)s") % {"name": name},
                "edits": [
                    {
                        "op": "insert_layer",
                        "before": name,
                        "layer": {"type": "Flatten", "name": self.free_name("flatten")},
                    }
                ],
            }
            hint = _("Add a Flatten layer before %(name)s.") % {"name": name}
        else:
            hint = _("Use BatchNorm2d for images, or put %(name)s after Flatten.") % {"name": name}
        self.error(
            "needs_flat",
            _("%(name)s needs a flat vector of features but gets a %(shape)s image from %(source)s.")
            % {"name": name, "shape": fmt_shape(shape), "source": source},
            hint=hint,
            layer=name,
            path=path,
            fix=fix,
        )

    def layer(
        self,
        layer: dict,
        in_shapes: list[tuple[int, ...]],
        sources: list[str],
        *,
        path: str,
        parent: str | None,
    ) -> tuple[int, ...] | None:
        """Shape-check one layer, append its row (and its inner layers' rows), return its output shape."""
        layer_type = LAYERS[layer["type"]]
        name = layer["name"]
        row: dict[str, Any] = {
            "name": name,
            "type": layer_type.type,
            "path": path,
            "parent": parent,
            "inputs": sources,
            "input_shape": list(in_shapes[0])
            if in_shapes and len(in_shapes) == 1
            else [list(s) for s in in_shapes],
            "output_shape": None,
            "params": 0,
            "macs": 0,
            "activation_bytes": 0,
            "inferred": {},
            "status": "ok",
        }
        self.rows.append(row)
        out, params, macs = self.compute(layer, layer_type, in_shapes, sources, row, path=path)
        if out is not None and (
            math.prod(out) > LIMITS["max_activation_elements"]
            or max(out, default=1) > LIMITS["max_dimension"]
        ):
            self.error(
                "too_large",
                _("%(name)s's output %(shape)s is too large to train.")
                % {"name": name, "shape": fmt_shape(out)},
                hint=_("Use fewer channels or smaller images, or shrink the image with pooling first."),
                layer=name,
                path=path,
            )
            out = None
        if out is None:
            row["status"] = "error"
            return None
        row.update(
            output_shape=list(out),
            params=params,
            macs=macs,
            activation_bytes=math.prod(out) * BYTES_PER_VALUE,
        )
        return out

    def infer(
        self,
        layer: dict,
        layer_type: LayerType,
        field: str,
        actual: sequence.Inferred,
        source: str,
        row: dict,
        path: str,
    ) -> sequence.Inferred:
        given = layer.get(field)
        row["inferred"][field] = actual
        if given is not None and given != actual:
            self.error(
                "wrong_inferred_value",
                _("%(name)s's %(field)s is %(given)s, but %(source)s gives it %(actual)s.")
                % {"name": layer["name"], "field": field, "given": given, "source": source, "actual": actual},
                hint=_("Set %(field)s to %(actual)s, or leave it empty and BuildX fills it in.")
                % {"field": field, "actual": actual},
                layer=layer["name"],
                path=path,
                field=field,
                fix={
                    "label": _("Set %(field)s to %(actual)s") % {"field": field, "actual": actual},
                    "edits": [
                        {"op": "set_layer_param", "layer": layer["name"], "param": field, "value": actual}
                    ],
                },
            )
        return actual

    def compute(
        self,
        layer: dict,
        layer_type: LayerType,
        in_shapes: list[tuple[int, ...]],
        sources: list[str],
        row: dict,
        *,
        path: str,
    ) -> tuple[tuple[int, ...] | None, int, int]:
        name, kind = layer["name"], layer_type.type
        if kind == "Add":
            first = in_shapes[0]
            if any(s != first for s in in_shapes):
                shapes = ", ".join(
                    f"{src} ({fmt_shape(s)})" for src, s in zip(sources, in_shapes, strict=True)
                )
                self.error(
                    "add_shapes",
                    _("%(name)s adds outputs of different shapes: %(shapes)s.")
                    % {"name": name, "shapes": shapes},
                    hint=_(
                        "Make them the same shape (same channels, same size), e.g. with a 1×1 Conv2d "
                        "on the smaller branch, or join them with Concat instead."
                    ),
                    layer=name,
                    path=path,
                    field="input",
                )
                return None, 0, 0
            return first, 0, 0
        if kind == "Concat":
            rank = len(in_shapes[0])
            dim = layer["dim"]
            if dim > rank:
                self.error(
                    "concat_dim",
                    _("%(name)s joins along dimension %(dim)s, but its inputs have only %(rank)s.")
                    % {"name": name, "dim": dim, "rank": rank},
                    hint=_("Use dim 1 to join channels."),
                    layer=name,
                    path=path,
                    field="dim",
                )
                return None, 0, 0
            for s in in_shapes:
                if len(s) != rank or any(
                    a != b for i, (a, b) in enumerate(zip(s, in_shapes[0], strict=True)) if i != dim - 1
                ):
                    shapes = ", ".join(
                        f"{src} ({fmt_shape(sh)})" for src, sh in zip(sources, in_shapes, strict=True)
                    )
                    self.error(
                        "concat_shapes",
                        _(
                            "%(name)s can only join outputs that match except along dimension "
                            "%(dim)s: %(shapes)s."
                        )
                        % {"name": name, "dim": dim, "shapes": shapes},
                        hint=_("Give the branches the same height and width (same pooling on each)."),
                        layer=name,
                        path=path,
                        field="input",
                    )
                    return None, 0, 0
            joined = list(in_shapes[0])
            joined[dim - 1] = sum(s[dim - 1] for s in in_shapes)
            return tuple(joined), 0, 0

        shape, source = in_shapes[0], sources[0]
        if self.task not in layer_type.tasks:
            if self.task == TASK_LM:
                message = _(
                    "%(name)s (%(type)s) is for images; a language model works on sequences of tokens."
                )
                hint = _(
                    "Use the Sequence blocks (TokenAndPosition, TransformerBlock, LayerNorm and Linear), or "
                    "switch the design's task."
                )
            else:
                message = _(
                    "%(name)s (%(type)s) is for language models; an image classifier works on images."
                )
                hint = _(
                    "Use the image blocks (Conv2d, pooling, Flatten, Linear), or switch the design's task."
                )
            self.error("wrong_task", message % {"name": name, "type": kind}, hint=hint, layer=name, path=path)
            return None, 0, 0
        if self.task == TASK_LM and (kind in sequence.SEQUENCE_KINDS or source == MODEL_INPUT):
            return sequence.compute(
                self, layer, layer_type, shape, source, row, path=path, ids=source == MODEL_INPUT
            )
        if kind == "Input":
            if layer.get("shape") is not None and tuple(layer["shape"]) != shape:
                self.infer(
                    layer, layer_type, "shape", list(shape), _("the dataset after preprocessing"), row, path
                )
            row["inferred"]["shape"] = list(shape)
            return shape, 0, 0
        if layer_type.rank and len(shape) not in layer_type.rank:
            self.rank_error(layer, layer_type, shape, source, path)
            return None, 0, 0
        if kind == "Residual":
            return self.residual(layer, shape, path=path)

        inferred: dict[str, Any] = {}
        for param in layer_type.params:
            if param.inferred:
                actual = shape[-1] if kind == "Linear" else shape[0]
                inferred[param.name] = self.infer(layer, layer_type, param.name, actual, source, row, path)
        if not self.precheck(layer, layer_type, shape, inferred, path=path):
            return None, 0, 0
        kwargs = torch_kwargs(layer, layer_type, inferred)
        try:
            _module, params = meta_module(layer_type.torch, kwargs)
            # Shape-keeping layers (BatchNorm, activations, Dropout) are probed with one pixel per channel:
            # PyTorch's meta BatchNorm alone costs ~1 ms a call, and the probe's shape then depends only on the
            # channels, so one probe serves every image size. Anything else sees the full input.
            probe = (shape[0],) + (1,) * (len(shape) - 1) if layer_type.keeps_shape else shape
            out = meta_forward(layer_type.torch, kwargs, probe)
            if layer_type.keeps_shape:
                out = shape if out == probe else meta_forward(layer_type.torch, kwargs, shape)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            self.error(
                "pytorch",
                _("PyTorch rejects %(name)s: %(error)s") % {"name": name, "error": str(exc)[:300]},
                hint=_("Check %(name)s's settings against the shape coming in (%(shape)s).")
                % {"name": name, "shape": fmt_shape(shape)},
                layer=name,
                path=path,
            )
            return None, 0, 0
        return out, params, self.macs(layer, kind, shape, out, inferred)

    def precheck(
        self, layer: dict, layer_type: LayerType, shape: tuple[int, ...], inferred: dict, *, path: str
    ) -> bool:
        """Shape rules with a beginner's message, checked before PyTorch gives its own."""
        name, kind = layer["name"], layer_type.type
        if kind in ("Conv2d", "ConvTranspose2d"):
            groups = layer["groups"]
            if inferred["in_channels"] % groups or layer["out_channels"] % groups:
                self.error(
                    "groups",
                    _(
                        "%(name)s: groups (%(groups)s) must divide both in_channels (%(in)s) and "
                        "out_channels (%(out)s)."
                    )
                    % {
                        "name": name,
                        "groups": groups,
                        "in": inferred["in_channels"],
                        "out": layer["out_channels"],
                    },
                    hint=_("Use groups 1 for a normal convolution."),
                    layer=name,
                    path=path,
                    field="groups",
                )
                return False
        if kind == "Conv2d":
            k, s, d = _pair(layer["kernel_size"]), _pair(layer["stride"]), _pair(layer["dilation"])
            if layer["padding"] == "same":
                if s != (1, 1):
                    self.error(
                        "same_stride",
                        _('%(name)s: padding "same" only works with stride 1.') % {"name": name},
                        hint=_("Set stride to 1, or padding to a number."),
                        layer=name,
                        path=path,
                        field="padding",
                    )
                    return False
                return True
            p = (0, 0) if layer["padding"] == "valid" else _pair(layer["padding"])
            for i in range(2):
                reach = d[i] * (k[i] - 1) + 1
                if shape[1 + i] + 2 * p[i] < reach:
                    need = math.ceil((reach - shape[1 + i]) / 2)
                    self.error(
                        "kernel_too_large",
                        _("%(name)s's %(k)s kernel does not fit its %(h)s×%(w)s input.")
                        % {"name": name, "k": fmt_shape(k), "h": shape[1], "w": shape[2]},
                        hint=_(
                            "Use a smaller kernel_size, set padding to %(need)s, or remove a pooling layer "
                            "before %(name)s."
                        )
                        % {"need": need, "name": name},
                        layer=name,
                        path=path,
                        field="kernel_size",
                    )
                    return False
        if kind == "ConvTranspose2d":
            s, d, op = _pair(layer["stride"]), _pair(layer["dilation"]), _pair(layer["output_padding"])
            if op[0] >= max(s[0], d[0]) or op[1] >= max(s[1], d[1]):
                self.error(
                    "output_padding",
                    _("%(name)s: output_padding must be smaller than stride or dilation.") % {"name": name},
                    hint=_("Set output_padding to 0."),
                    layer=name,
                    path=path,
                    field="output_padding",
                )
                return False
        if kind in ("MaxPool2d", "AvgPool2d"):
            k = _pair(layer["kernel_size"])
            s = _pair(layer["stride"]) if layer["stride"] is not None else k
            p = _pair(layer["padding"])
            d = _pair(layer.get("dilation", 1))
            if p[0] * 2 > k[0] or p[1] * 2 > k[1]:
                self.error(
                    "pool_padding",
                    _("%(name)s: padding can be at most half the kernel_size.") % {"name": name},
                    hint=_("Use padding %(p)s or less.") % {"p": k[0] // 2},
                    layer=name,
                    path=path,
                    field="padding",
                )
                return False
            out = [(shape[1 + i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(2)]
            if out[0] < 1 or out[1] < 1:
                self.error(
                    "shrinks_to_nothing",
                    _("%(name)s would shrink %(h)s×%(w)s to %(oh)s×%(ow)s.")
                    % {
                        "name": name,
                        "h": shape[1],
                        "w": shape[2],
                        "oh": max(out[0], 0),
                        "ow": max(out[1], 0),
                    },
                    hint=_("Remove a pooling layer, or pad the convolution before it."),
                    layer=name,
                    path=path,
                    field="kernel_size",
                )
                return False
        if kind == "Flatten":
            batch_rank = len(shape) + 1
            start, end = layer["start_dim"], layer["end_dim"]
            end = end + batch_rank if end < 0 else end
            if start >= batch_rank or not 0 <= end < batch_rank or end < start:
                self.error(
                    "flatten_dims",
                    _("%(name)s: start_dim %(s)s and end_dim %(e)s do not fit a %(shape)s input.")
                    % {
                        "name": name,
                        "s": layer["start_dim"],
                        "e": layer["end_dim"],
                        "shape": fmt_shape(shape),
                    },
                    hint=_("Use start_dim 1 and end_dim -1 to flatten everything but the batch."),
                    layer=name,
                    path=path,
                    field="start_dim",
                )
                return False
        if kind == "Softmax":
            dim = layer["dim"]
            batch_rank = len(shape) + 1
            if not -batch_rank <= dim < batch_rank or dim in (0, -batch_rank):
                self.error(
                    "softmax_dim",
                    _("%(name)s: dim %(dim)s is not a dimension of a %(shape)s input (0 would be the batch).")
                    % {"name": name, "dim": dim, "shape": fmt_shape(shape)},
                    hint=_("Use dim 1."),
                    layer=name,
                    path=path,
                    field="dim",
                )
                return False
        if kind == "Upsample":
            out = [math.floor(d * layer["scale_factor"]) for d in shape[1:]]
            if (
                max(out) > LIMITS["max_dimension"]
                or math.prod(out) * shape[0] > LIMITS["max_activation_elements"]
            ):
                self.error(
                    "too_large",
                    _("%(name)s would make the image %(h)s×%(w)s: too large to train.")
                    % {"name": name, "h": out[0], "w": out[1]},
                    hint=_("Use a smaller scale_factor."),
                    layer=name,
                    path=path,
                    field="scale_factor",
                )
                return False
        return True

    @staticmethod
    def macs(layer: dict, kind: str, shape: tuple[int, ...], out: tuple[int, ...], inferred: dict) -> int:
        """Multiply-accumulates per image of the layers that dominate compute (convolutions, Linear)."""
        if kind == "Conv2d":
            k = _pair(layer["kernel_size"])
            return math.prod(out) * (inferred["in_channels"] // layer["groups"]) * k[0] * k[1]
        if kind == "ConvTranspose2d":
            k = _pair(layer["kernel_size"])
            return math.prod(shape) * (layer["out_channels"] // layer["groups"]) * k[0] * k[1]
        if kind == "Linear":
            return math.prod(shape[:-1]) * inferred["in_features"] * layer["out_features"]
        return 0

    def residual(
        self, layer: dict, shape: tuple[int, ...], *, path: str
    ) -> tuple[tuple[int, ...] | None, int, int]:
        name = layer["name"]
        inner = layer.get("layers", [])
        if not inner:
            self.error(
                "empty_block",
                _("%(name)s has no layers inside.") % {"name": name},
                hint=_("Add layers to the block, e.g. Conv2d, BatchNorm2d, ReLU, Conv2d, BatchNorm2d."),
                layer=name,
                path=path,
                field="layers",
            )
            return None, 0, 0
        first_row = len(self.rows)
        current, source = shape, name
        for index, child in enumerate(inner):
            out = self.layer(child, [current], [source], path=f"{path}.layers[{index}]", parent=name)
            if out is None:
                self.block_rest(inner[index + 1 :], parent=name, path=path, offset=index + 1)
                return None, 0, 0
            current, source = out, child["name"]
        children = [r for r in self.rows[first_row:] if r["parent"] == name]
        params = sum(r["params"] for r in children)
        macs = sum(r["macs"] for r in children)
        shortcut: dict[str, Any] = {"kind": "identity", "params": 0}
        if current != shape:
            projection = _projection(shape, current)
            if projection is None:
                self.error(
                    "residual_shape",
                    _(
                        "%(name)s's layers turn %(a)s into %(b)s, which a 1×1 projection on the "
                        "skip connection cannot match."
                    )
                    % {"name": name, "a": fmt_shape(shape), "b": fmt_shape(current)},
                    hint=_(
                        "Keep the block's output an image whose size is the input's divided by the stride "
                        "(use padding so that 3×3 convolutions keep the size)."
                    ),
                    layer=name,
                    path=path,
                )
                return None, 0, 0
            stride, channels = projection
            conv_kwargs = projection_kwargs(shape[0], channels, stride)
            _m, conv_params = meta_module("Conv2d", conv_kwargs)
            _m, bn_params = meta_module("BatchNorm2d", (("num_features", channels),))
            shortcut = {
                "kind": "projection",
                "stride": stride,
                "in_channels": shape[0],
                "out_channels": channels,
                "params": conv_params + bn_params,
            }
            params += conv_params + bn_params
            macs += math.prod(current) * shape[0]
        self.rows[first_row - 1]["shortcut"] = shortcut
        return current, params, macs

    def block_rest(self, layers: list[dict], *, parent: str, path: str, offset: int) -> None:
        for index, child in enumerate(layers):
            self.blocked(child, path=f"{path}.layers[{offset + index}]", parent=parent)

    def blocked(
        self, layer: dict, *, path: str, parent: str | None, sources: list[str] | None = None
    ) -> None:
        """A layer downstream of an error: no shape to show, and no second error for the same cause."""
        self.rows.append(
            {
                "name": layer["name"],
                "type": layer["type"],
                "path": path,
                "parent": parent,
                "inputs": sources or [],
                "input_shape": None,
                "output_shape": None,
                "params": 0,
                "macs": 0,
                "activation_bytes": 0,
                "inferred": {},
                "status": "blocked",
            }
        )
        for index, child in enumerate(layer.get("layers", [])):
            self.blocked(child, path=f"{path}.layers[{index}]", parent=layer["name"])

    # --- the graph

    def graph(self) -> list[list[str] | None]:
        """Resolve each top-level layer's inputs to names ("x" = the model input); None where they are broken."""
        layers = self.spec["layers"]
        position = {layer["name"]: i for i, layer in enumerate(layers)}
        explicit: list[list[str]] = []
        for i, layer in enumerate(layers):
            refs = layer.get("input")
            if refs is None:
                refs = [] if layer["type"] == "Input" else [layers[i - 1]["name"] if i else MODEL_INPUT]
            explicit.append([refs] if isinstance(refs, str) else list(refs))

        def depends_on(start: int, target: int) -> bool:
            seen, stack = set(), [start]
            while stack:
                node = stack.pop()
                if node == target:
                    return True
                if node in seen:
                    continue
                seen.add(node)
                stack.extend(position[r] for r in explicit[node] if r in position)
            return False

        resolved: list[list[str] | None] = []
        consumed: set[str] = set()
        for i, layer in enumerate(layers):
            name, path = layer["name"], f"layers[{i}]"
            layer_type = LAYERS[layer["type"]]
            ok = True
            if layer["type"] == "Input" and i != 0:
                self.error(
                    "input_not_first",
                    _("%(name)s is an Input layer but not the first layer.") % {"name": name},
                    hint=_("Move it to the top, or delete it: the first layer gets the model input anyway."),
                    layer=name,
                    path=path,
                )
                ok = False
            for ref in explicit[i]:
                consumed.add(ref)
                if ref == MODEL_INPUT:
                    continue
                j = position.get(ref)
                if j is None:
                    names = ", ".join([MODEL_INPUT] + [lay["name"] for lay in layers[:i]][-6:])
                    self.error(
                        "dangling_input",
                        _("%(name)s takes its input from %(ref)s, but no layer has that name.")
                        % {"name": name, "ref": _show(ref)},
                        hint=_("Pick one of the layers above it: %(names)s.") % {"names": names},
                        layer=name,
                        path=path,
                        field="input",
                    )
                    ok = False
                elif j == i or (j > i and depends_on(j, i)):
                    self.error(
                        "cycle",
                        _("%(name)s and %(ref)s form a cycle: each needs the other's output first.")
                        % {"name": name, "ref": ref},
                        hint=_(
                            "A layer can only take the output of a layer above it; change %(name)s's input."
                        )
                        % {"name": name},
                        layer=name,
                        path=path,
                        field="input",
                    )
                    ok = False
                elif j > i:
                    self.error(
                        "forward_input",
                        _("%(name)s takes its input from %(ref)s, which comes after it.")
                        % {"name": name, "ref": ref},
                        hint=_("Move %(ref)s above %(name)s, or pick a layer above it.")
                        % {"name": name, "ref": ref},
                        layer=name,
                        path=path,
                        field="input",
                    )
                    ok = False
            count = len(explicit[i])
            if layer_type.inputs == "many" and count < 2:
                self.error(
                    "merge_needs_inputs",
                    _("%(name)s needs at least two inputs to merge.") % {"name": name},
                    hint=_('List them in input, e.g. ["%(a)s", "%(b)s"].')
                    % {"a": layers[i - 1]["name"] if i else MODEL_INPUT, "b": MODEL_INPUT},
                    layer=name,
                    path=path,
                    field="input",
                )
                ok = False
            elif layer_type.inputs == "one" and count > 1:
                self.error(
                    "one_input",
                    _("%(name)s takes one input, not %(n)s.") % {"name": name, "n": count},
                    hint=_("Merge them first with an Add or Concat layer, then feed that to %(name)s.")
                    % {"name": name},
                    layer=name,
                    path=path,
                    field="input",
                )
                ok = False
            resolved.append(explicit[i] if ok else None)
        for i, layer in enumerate(layers[:-1]):
            if layer["name"] not in consumed and layer["type"] != "Input":
                self.error(
                    "unused_branch",
                    _("Nothing uses %(name)s's output, so it cannot change the result.")
                    % {"name": layer["name"]},
                    hint=_("Feed it to a later layer (its input, or an Add/Concat), or delete it."),
                    layer=layer["name"],
                    path=f"layers[{i}]",
                )
        return resolved

    # --- the whole report

    def run(self) -> dict:
        hp = self.spec["hyperparameters"]
        input_shape, pre_rows = self.preprocess()
        layers = self.spec["layers"]
        shapes: dict[str, tuple[int, ...] | None] = {MODEL_INPUT: input_shape}
        if not layers:
            self.error(
                "no_layers",
                _("The design has no layers yet."),
                hint=_("Start with a Conv2d, or open a starter design."),
                path="layers",
            )
        inputs = self.graph() if layers else []
        for i, layer in enumerate(layers):
            path = f"layers[{i}]"
            refs = inputs[i]
            if layer["type"] == "Input" and refs == []:
                refs = [MODEL_INPUT]
            in_shapes = [shapes.get(r) for r in refs] if refs is not None else [None]
            known = [s for s in in_shapes if s is not None]
            if refs is None or len(known) != len(in_shapes):
                self.blocked(layer, path=path, parent=None, sources=refs)
                shapes[layer["name"]] = None
                continue
            shapes[layer["name"]] = self.layer(layer, known, refs, path=path, parent=None)
            if layer["type"] == "Input":
                shapes[MODEL_INPUT] = shapes[layer["name"]]
        output_shape = shapes.get(layers[-1]["name"]) if layers else None
        if output_shape is not None:
            if self.task == TASK_LM:
                self.check_lm_output(output_shape)
            else:
                self.check_output(output_shape)
        top = [r for r in self.rows if r["parent"] is None]
        params = sum(r["params"] for r in top)
        self.check_sizes(params, hp)
        activation_bytes = sum(r["activation_bytes"] for r in self.rows) + sum(
            r["output_shape"] and math.prod(r["output_shape"]) * BYTES_PER_VALUE or 0
            for r in self.rows
            if r.get("shortcut", {}).get("kind") == "projection"
        )
        batch = hp["batch_size"]
        optimizer_slots = {"adam": 2, "adamw": 2, "sgd": 1 if hp["momentum"] > 0 else 0}[hp["optimizer"]]
        weights = params * BYTES_PER_VALUE
        input_bytes = math.prod(input_shape) * BYTES_PER_VALUE if input_shape else 0
        if self.task == TASK_LM:
            input_bytes = self.context_length * 8  # int64 token ids
        memory = {
            "batch_size": batch,
            "weights_bytes": weights,
            "gradients_bytes": weights,
            "optimizer_bytes": weights * optimizer_slots,
            "activations_bytes": (activation_bytes + input_bytes) * batch,
        }
        memory["total_bytes"] = sum(v for k, v in memory.items() if k != "batch_size")
        valid = not self.errors
        blockers = limit_issues(epochs=hp["epochs"], params=params, layers=top, limits=self.limits)
        total_macs = sum(r["macs"] for r in top)
        if self.task == TASK_LM:
            matches = output_shape is not None and list(output_shape) == [
                self.context_length,
                self.vocab_size,
            ]
            dataset: dict[str, Any] = {
                "name": self.corpus.name,
                "kind": "text",
                "tokenizer": hp["tokenizer"],
                "vocab_size": self.vocab_size,
                "context_length": self.context_length,
            }
        else:
            matches = output_shape is not None and list(output_shape) == [self.dataset.num_classes]
            dataset = {
                "name": self.dataset.name,
                "input_shape": list(self.dataset.input_shape),
                "num_classes": self.dataset.num_classes,
                "class_names": list(self.dataset.class_names),
            }
        extra: dict[str, Any] = {}
        if self.task == TASK_LM:
            # A language model's costs are quoted per token (nanoGPT's 6N FLOPs a token, and so on).
            extra = {
                "task": TASK_LM,
                "per_token": {
                    "macs": sequence.per_token(total_macs, self.context_length),
                    "activation_bytes": sequence.per_token(activation_bytes, self.context_length),
                },
            }
        return {
            "valid": valid,
            "ready_to_train": valid and matches and not blockers,
            **extra,
            "dataset": dataset,
            "input_shape": list(input_shape) if input_shape else None,
            "output_shape": list(output_shape) if output_shape is not None else None,
            "preprocessing": pre_rows,
            "layers": self.rows,
            "totals": {
                "params": params,
                "trainable_params": params,
                "macs": total_macs,
                "activation_bytes": activation_bytes,
                "layers": len(self.rows),
            },
            "memory": memory,
            "errors": self.errors,
            "warnings": self.warnings,
            "blockers": blockers,
            "limits": self.limits.as_json(),
        }

    def check_output(self, out: tuple[int, ...]) -> None:
        layers = self.spec["layers"]
        classes, dataset = self.dataset.num_classes, self.dataset.name
        last = layers[-1]
        meaningful = [lay for lay in layers if lay["type"] not in ("Identity", "Dropout")]
        if meaningful and meaningful[-1]["type"] == "Softmax":
            name = meaningful[-1]["name"]
            self.warning(
                "softmax_before_loss",
                _("%(name)s applies Softmax, but training uses CrossEntropyLoss, which applies it again.")
                % {"name": name},
                hint=_(
                    "Delete %(name)s: the model should output raw scores (logits). Softmax twice makes "
                    "learning slow."
                )
                % {"name": name},
                layer=name,
                path=f"layers[{layers.index(meaningful[-1])}]",
                fix={
                    "label": _("Remove %(name)s") % {"name": name},
                    "edits": [{"op": "remove_layer", "layer": name}],
                },
            )
        if list(out) == [classes]:
            return
        ctx = {"shape": fmt_shape(out), "dataset": dataset, "classes": classes, "last": last["name"]}
        if len(out) == 1 and last["type"] == "Linear":
            self.warning(
                "output_mismatch",
                _("The model ends with %(shape)s scores, but %(dataset)s has %(classes)s classes.") % ctx,
                hint=_("Set %(last)s's out_features to %(classes)s.") % ctx,
                layer=last["name"],
                path=f"layers[{len(layers) - 1}]",
                field="out_features",
                fix={
                    "label": _("Set out_features to %(classes)s") % ctx,
                    "edits": [
                        {
                            "op": "set_layer_param",
                            "layer": last["name"],
                            "param": "out_features",
                            "value": classes,
                        }
                    ],
                },
            )
            return
        head: list[dict] = []
        if len(out) != 1:
            head.append({"type": "Flatten", "name": self.free_name("flatten")})
        head.append({"type": "Linear", "name": self.free_name("fc"), "out_features": classes})
        # Each new layer goes after the one before it: the last layer, then the Flatten just added.
        anchors = [last["name"], *(layer["name"] for layer in head[:-1])]
        edits = [
            {"op": "insert_layer", "after": anchor, "layer": layer}
            for anchor, layer in zip(anchors, head, strict=True)
        ]
        if len(out) == 1:
            hint = (
                _(
                    "Add a Linear layer with out_features %(classes)s at the end: it turns the %(shape)s features "
                    "into one score per class."
                )
                % ctx
            )
            label = _("Add Linear(%(classes)s)") % ctx
        else:
            hint = (
                _(
                    "Add a classifier head at the end: Flatten, then Linear with out_features %(classes)s (one score "
                    "per class)."
                )
                % ctx
            )
            if math.prod(out) > 16384:
                hint += " " + _(
                    "With this many features, an AdaptiveAvgPool2d before Flatten keeps the Linear small."
                )
            label = _("Add Flatten + Linear(%(classes)s)") % ctx
        self.warning(
            "output_mismatch",
            _(
                "The model ends with a %(shape)s output, but a classifier for %(dataset)s "
                "must end with %(classes)s class scores."
            )
            % ctx,
            hint=hint,
            layer=last["name"],
            path=f"layers[{len(layers) - 1}]",
            fix={"label": label, "edits": edits},
        )

    def check_lm_output(self, out: tuple[int, ...]) -> None:
        """A language model ends with (T, V): next-token scores over the whole vocabulary at every position."""
        T, V = self.context_length, self.vocab_size
        if list(out) == [T, V]:
            return
        layers = self.spec["layers"]
        last = layers[-1]
        path = f"layers[{len(layers) - 1}]"
        ctx = {"shape": fmt_shape(out), "vocab": V, "last": last["name"], "t": T}
        width_field = {"Linear": "out_features", "Embedding": "embedding_dim"}.get(last["type"])
        if len(out) == 2 and out[0] == T and width_field:
            self.error(
                "vocab_mismatch",
                _("The head's %(field)s must equal the vocabulary size (%(vocab)s); %(last)s gives %(n)s.")
                % {**ctx, "field": width_field, "n": out[1]},
                hint=_("Set %(last)s's %(field)s to %(vocab)s: one score for each token that can come next.")
                % {**ctx, "field": width_field},
                layer=last["name"],
                path=path,
                field=width_field,
                fix={
                    "label": _("Set %(field)s to %(vocab)s") % {**ctx, "field": width_field},
                    "edits": [
                        {"op": "set_layer_param", "layer": last["name"], "param": width_field, "value": V}
                    ],
                },
            )
            return
        if len(out) == 2 and out[0] == T:
            self.error(
                "lm_output",
                _(
                    "The model ends with %(shape)s vectors, but a language model must end with %(vocab)s "
                    "next-token scores per position."
                )
                % ctx,
                hint=_("Add a Linear head with out_features %(vocab)s at the end.") % ctx,
                layer=last["name"],
                path=path,
                fix={
                    "label": _("Add Linear(%(vocab)s)") % ctx,
                    "edits": [
                        {
                            "op": "insert_layer",
                            "after": last["name"],
                            "layer": {"type": "Linear", "name": self.free_name("head"), "out_features": V},
                        }
                    ],
                },
            )
            return
        self.error(
            "lm_output",
            _(
                "The model ends with %(shape)s, but a language model must keep one row per position: "
                "%(t)s × %(vocab)s next-token scores."
            )
            % ctx,
            hint=_("Remove the Flatten: every block of a language model keeps the positions apart."),
            layer=last["name"],
            path=path,
        )

    def check_sizes(self, params: int, hp: dict) -> None:
        for row in self.rows:
            if row["type"] == "Linear" and row["params"] >= LARGE_LINEAR_PARAMS:
                self.warning(
                    "large_linear",
                    _("%(name)s has %(params)s parameters: most of the model, and slow to train.")
                    % {"name": row["name"], "params": f"{row['params']:,}"},
                    hint=_(
                        "Shrink the image before Flatten (more pooling, or AdaptiveAvgPool2d), or use "
                        "fewer out_features."
                    ),
                    layer=row["name"],
                    path=row["path"],
                )
            if row["type"] in ("BatchNorm1d", "BatchNorm2d") and hp["batch_size"] == 1:
                self.warning(
                    "batchnorm_batch_of_one",
                    _("%(name)s cannot learn batch statistics from batches of one image.")
                    % {"name": row["name"]},
                    hint=_("Use a batch_size of 8 or more."),
                    layer=row["name"],
                    path=row["path"],
                )


def projection_kwargs(in_channels: int, out_channels: int, stride: int) -> tuple[tuple[str, Any], ...]:
    """nn.Conv2d kwargs of a Residual block's automatic shortcut (followed by BatchNorm2d(out_channels))."""
    return (
        ("in_channels", in_channels),
        ("out_channels", out_channels),
        ("kernel_size", 1),
        ("stride", stride),
        ("bias", False),
    )


def analyse(spec: dict, *, limits: TrainingLimits | None = None) -> dict:
    """The validation report of a normalised spec (see docs/contracts.md section 5); ``blockers`` hold what
    is over ``limits`` (this server's training limits unless told)."""
    return _Analysis(spec, limits=limits or training_limits()).run()


def validate(raw: Any, *, limits: TrainingLimits | None = None) -> tuple[dict, dict]:
    """Normalise and analyse: (normalised spec, report). Raises SpecError for a spec that cannot be read."""
    spec = normalise(raw)
    return spec, analyse(spec, limits=limits)


def hyperparameter(spec: dict, name: str) -> Any:
    table = {p.name: p for p in TASK_HYPERPARAMETERS[spec_task(spec)]}
    value = spec["hyperparameters"].get(name, (table.get(name) or HYPERPARAMETER_BY_NAME[name]).default)
    if name == "lr_step_size" and value is None:
        return max(1, spec["hyperparameters"]["epochs"] // 3)
    return value


WARM_UP_LAYERS = [
    {"type": "Input"},
    {"type": "Conv2d", "out_channels": 4, "padding": 1},
    {"type": "BatchNorm2d"},
    {"type": "ReLU"},
    {"type": "Residual", "layers": [{"type": "Conv2d", "out_channels": 8, "stride": 2, "padding": 1}]},
    {"type": "ConvTranspose2d", "out_channels": 4},
    {"type": "LeakyReLU"},
    {"type": "GELU"},
    {"type": "SiLU"},
    {"type": "ELU"},
    {"type": "Sigmoid"},
    {"type": "Tanh"},
    {"type": "Dropout2d"},
    {"type": "Upsample"},
    {"type": "AvgPool2d"},
    {"type": "MaxPool2d"},
    {"type": "Identity"},
    {"type": "AdaptiveMaxPool2d", "output_size": 2},
    {"type": "AdaptiveAvgPool2d", "name": "gap", "output_size": 2},
    {"type": "Conv2d", "name": "side", "out_channels": 4, "kernel_size": 1, "input": "gap"},
    {"type": "Concat", "name": "cat", "input": ["gap", "side"]},
    {"type": "Conv2d", "name": "mix", "out_channels": 4, "kernel_size": 1},
    {"type": "Add", "input": ["mix", "side"]},
    {"type": "Flatten"},
    {"type": "Linear", "out_features": 16},
    {"type": "BatchNorm1d"},
    {"type": "Dropout"},
    {"type": "Linear", "out_features": 10},
    {"type": "Softmax"},
]


def warm_up() -> None:
    """Run every layer type once on the meta device.

    PyTorch loads its meta kernels on first use: the first validation of a process would take seconds. The
    server processes call this in a background thread at start-up (designs.apps.start_validation_warm_up)
    so that the editor's first request does not pay for it.
    """
    validate({"dataset": "digits", "layers": WARM_UP_LAYERS}, limits=NO_LIMITS)
