"""Random and hostile specs against the validate API: always a report or a 400 with field errors, never a 500."""

from __future__ import annotations

import json
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from designs.catalog import HYPERPARAMETERS, LAYERS, TRANSFORMS

URL = "/api/v1/designs/validate/"
# A hang guard, not a performance figure (bench/validate.py measures those): far above any real answer.
HANG_SECONDS = 10

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.sampled_from([0, 1, 2, 3, -1, 2**31, 2**63, 10**18, 65536, 4097])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["3", "same", "valid", "x", "conv1", "nan", "", "relu1", "1e309"])
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
param_names = sorted(
    {p.name for layer in LAYERS.values() for p in layer.params} | {"input", "name", "id", "params"}
)


@st.composite
def layers(draw, depth: int = 0):
    kind = draw(st.sampled_from(sorted(LAYERS)) | st.text(max_size=8))
    layer = {"type": kind}
    if draw(st.booleans()):
        layer["name"] = draw(
            st.sampled_from(["conv1", "relu1", "x", "train", "a-b", "__class__", "1"]) | st.text(max_size=6)
        )
    keys = draw(st.lists(st.sampled_from(param_names), max_size=4))
    for key in keys:
        layer[key] = draw(json_values)
    if kind == "Residual" and depth < 6:
        layer["layers"] = draw(st.lists(layers(depth + 1), max_size=3))
    if draw(st.integers(0, 5)) == 0:
        layer["input"] = draw(
            st.sampled_from(["x", "conv1", "ghost"]) | st.lists(st.text(max_size=5), max_size=3)
        )
    return layer


@st.composite
def sensible_layers(draw):
    """Layers that are usually readable, so that the analysis (not only the parser) gets exercised."""
    kind = draw(st.sampled_from(sorted(LAYERS)))
    layer: dict = {"type": kind}
    for param in LAYERS[kind].params:
        if param.kind == "layers":
            layer["layers"] = draw(st.lists(sensible_layers(), max_size=3))
        elif draw(st.integers(0, 2)) == 0 and param.kind in ("int", "int_pair") and param.min is not None:
            layer[param.name] = draw(st.integers(int(param.min), int(min(param.max, 64))))
    if LAYERS[kind].params and any(p.required for p in LAYERS[kind].params):
        for param in LAYERS[kind].params:
            if param.required:
                layer[param.name] = draw(st.integers(1, 64))
    return layer


hyperparameters = st.dictionaries(
    st.sampled_from([p.name for p in HYPERPARAMETERS] + ["lr", "use_cloud"]), json_values, max_size=5
)
preprocessing = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(sorted(TRANSFORMS)) | st.text(max_size=6)},
        optional={"size": json_values, "padding": json_values, "mean": json_values, "p": json_values},
    ),
    max_size=4,
)
specs = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"layers": st.lists(layers(), max_size=8)},
        optional={
            "model_name": json_values,
            "dataset": st.sampled_from(["digits", "cifar-10", "MNIST", "shapes", "imagenet"]) | json_values,
            "preprocessing": preprocessing | json_values,
            "hyperparameters": hyperparameters | json_values,
            "junk": json_values,
        },
    ),
    st.fixed_dictionaries(
        {
            "dataset": st.sampled_from(["digits", "CIFAR10", "FashionMNIST"]),
            "layers": st.lists(sensible_layers(), min_size=1, max_size=12),
        },
        optional={"preprocessing": preprocessing},
    ),
)


def assert_answer(response) -> dict:
    assert response.status_code in (200, 400), response.content[:500]
    body = response.json()
    if response.status_code == 200:
        report = body["report"]
        assert isinstance(report["valid"], bool) and isinstance(report["layers"], list)
        for issue in report["errors"] + report["warnings"]:
            assert issue["message"] and isinstance(issue["hint"], str)
    else:
        error = body["error"]
        assert error["code"] in ("invalid_spec", "invalid") and error["message"]
        assert error["fields"] and all(
            isinstance(messages, list) and all(isinstance(m, str) and m for m in messages)
            for messages in error["fields"].values()
        )
    return body


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(spec=specs)
def test_any_spec_gets_a_report_or_field_errors(alice_client, spec):
    started = time.monotonic()
    assert_answer(alice_client.post(URL, json.dumps(spec), content_type="application/json"))
    assert time.monotonic() - started < HANG_SECONDS


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(count=st.integers(min_value=400, max_value=5000), kind=st.sampled_from(["ReLU", "Conv2d", "Residual"]))
def test_thousands_of_layers_are_refused_or_checked_quickly(alice_client, count, kind):
    layer = {"type": kind, "out_channels": 8, "padding": 1} if kind == "Conv2d" else {"type": kind}
    if kind == "Residual":
        layer["layers"] = [{"type": "ReLU"}]
    started = time.monotonic()
    body = assert_answer(
        alice_client.post(
            URL, {"dataset": "digits", "layers": [layer] * count}, content_type="application/json"
        )
    )
    assert time.monotonic() - started < HANG_SECONDS
    if count * (2 if kind == "Residual" else 1) > 500:
        assert "at most 500 layers" in body["error"]["fields"]["layers"][0]


def test_deep_nesting_is_an_answer(alice_client):
    nested: dict = {"type": "ReLU"}
    for _ in range(20):  # 43 levels of JSON: within MAX_JSON_DEPTH, so the validator answers
        nested = {"type": "Residual", "layers": [nested]}
    body = assert_answer(
        alice_client.post(URL, {"dataset": "digits", "layers": [nested]}, content_type="application/json")
    )
    assert "nested more than 4 deep" in str(body["error"]["fields"])

    # Deeper than MAX_JSON_DEPTH: refused before the parser (buildx.middleware), as on every endpoint.
    deep_json = '{"dataset": "digits", "layers": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = alice_client.post(URL, deep_json, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_deep"


def test_huge_numbers_and_strings_in_numeric_fields_are_field_errors(alice_client):
    spec = {
        "dataset": "digits",
        "layers": [
            {
                "type": "Conv2d",
                "name": "conv1",
                "out_channels": 10**40,
                "kernel_size": [3, "3"],
                "stride": 1e308,
            },
            {"type": "Linear", "name": "fc", "out_features": "10", "in_features": -5},
        ],
        "hyperparameters": {"batch_size": 2**70, "learning_rate": "fast"},
    }
    body = assert_answer(alice_client.post(URL, spec, content_type="application/json"))

    assert set(body["error"]["fields"]) == {
        "layers[0].out_channels",
        "layers[0].kernel_size",
        "layers[0].stride",
        "layers[1].out_features",
        "layers[1].in_features",
        "hyperparameters.batch_size",
        "hyperparameters.learning_rate",
    }


def test_a_body_over_the_size_limit_is_refused(alice_client, settings):
    settings.BUILDX_MAX_SPEC_BYTES = 1000
    spec = {"dataset": "digits", "layers": [{"type": "ReLU", "name": f"r{i}"} for i in range(100)]}
    body = json.dumps(spec)
    response = alice_client.post(URL, body, content_type="application/json")
    assert response.status_code == 400
    assert "too large" in response.json()["error"]["fields"]["spec"][0]
