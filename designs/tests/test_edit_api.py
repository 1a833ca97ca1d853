"""POST /api/v1/designs/edit/: the editor's fixes carried out by the one applier, from both sides."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from designs.edits import MAX_EDITS, OPS
from designs.tests.specs import original_example, small
from designs.validation import spec_hash, validate

URL = "/api/v1/designs/edit/"


def post(client, data) -> object:
    return client.post(URL, data, content_type="application/json")


def test_a_reports_fix_sent_back_gives_the_fixed_normalised_spec(alice_client):
    spec, report = validate(original_example())
    [warning] = report["warnings"]

    response = post(alice_client, {"spec": original_example(), "edits": warning["fix"]["edits"]})

    assert response.status_code == 200
    body = response.json()
    assert [layer["name"] for layer in body["spec"]["layers"]][-2:] == ["flatten1", "fc1"]
    assert body["spec"]["layers"][-1] == {"type": "Linear", "name": "fc1", "out_features": 10, "bias": True}
    assert body["spec_hash"] == spec_hash(body["spec"])
    fixed_spec, fixed = validate(body["spec"])
    assert fixed_spec == body["spec"] and fixed["ready_to_train"]


def test_every_fix_validation_offers_applies_and_clears_its_issue(alice_client):
    specs = [
        small([{"type": "Conv2d", "name": "conv", "out_channels": 4}, {"type": "Linear", "name": "fc", "out_features": 10}]),
        small([{"type": "Conv2d", "name": "c", "out_channels": 4}, {"type": "Flatten"}, {"type": "Linear", "out_features": 3}]),
        small([{"type": "Flatten"}, {"type": "Linear", "out_features": 10}, {"type": "Softmax", "name": "probs"}]),
        small([{"type": "Conv2d", "name": "a", "out_channels": 4}, {"type": "Conv2d", "name": "b", "in_channels": 9, "out_channels": 4}]),
    ]  # fmt: skip
    offered = 0
    for spec in specs:
        _normalised, report = validate(spec)
        for issue in report["errors"] + report["warnings"]:
            if "fix" not in issue:
                continue
            offered += 1
            response = post(alice_client, {"spec": spec, "edits": issue["fix"]["edits"]})
            assert response.status_code == 200, response.json()
            _spec, after = validate(response.json()["spec"])
            still = [(i["code"], i["layer"]) for i in after["errors"] + after["warnings"]]
            assert (issue["code"], issue["layer"]) not in still, issue
    assert offered >= 4


def test_a_suggestion_of_the_diagnosis_is_an_edit_the_endpoint_takes(alice_client):
    edit = {"op": "insert_layer", "after": "pool1", "layer": {"type": "Dropout", "p": 0.3}}
    response = post(alice_client, {"spec": original_example(), "edits": [edit]})

    assert response.status_code == 200
    layers = response.json()["spec"]["layers"]
    assert layers[3] == {"type": "Dropout", "name": "dropout1", "p": 0.3}


def test_it_needs_a_login(client):
    response = post(client, {"spec": original_example(), "edits": [{"op": "remove_layer", "layer": "relu1"}]})
    assert response.status_code in (401, 403)
    assert "error" in response.json()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"op": "rewrite_everything"}, "Unknown suggestion: rewrite_everything"),
        ({"op": "remove_layer", "layer": "ghost"}, "The design has no layer named ghost any more."),
        ({"op": "remove_layer"}, "The edit names no layer."),
        ({"op": "set_layer_param", "layer": "conv1", "value": 3}, "The edit names no setting of conv1."),
        ({"op": "insert_layer", "layer": {"type": "ReLU"}}, "An insert_layer edit names one layer"),
        ({"op": "insert_layer", "after": "conv1", "layer": "ReLU"}, "The suggestion names no layer type."),
        ({"op": "add_preprocessing", "transform": {}}, "The suggestion names no transform."),
        ("remove conv1", "An edit is an object with an op"),
        ({"op": ["set_hyperparameter"]}, "An edit is an object with an op"),
    ],
)
def test_an_edit_that_is_not_one_is_a_clear_400(alice_client, edit, message):
    response = post(
        alice_client,
        {
            "spec": original_example(),
            "edits": [{"op": "set_hyperparameter", "name": "epochs", "value": 3}, edit],
        },
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_edit"
    assert error["message"] == "This edit cannot be made to the design."
    [(field, [text])] = error["fields"].items()
    assert field == "edits[1]" and text.startswith(message)


def test_a_refused_edit_reads_in_korean_for_a_korean_page(alice_client):
    edit = {"op": "insert_layer", "layer": {"type": "ReLU"}}
    response = alice_client.post(
        URL,
        {"spec": original_example(), "edits": [edit]},
        content_type="application/json",
        HTTP_ACCEPT_LANGUAGE="ko",
    )

    error = response.json()["error"]
    assert error["message"] == "이 수정은 설계에 적용할 수 없습니다."
    assert error["fields"]["edits[0]"][0].startswith("insert_layer 수정에는")


def test_an_edit_that_leaves_a_bad_setting_says_which_setting(alice_client):
    edit = {"op": "set_layer_param", "layer": "conv1", "param": "kernel_size", "value": 99}
    response = post(alice_client, {"spec": original_example(), "edits": [edit]})

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "edits[0]": ["conv1 (Conv2d): kernel_size must be between 1 and 31; got 99."]
    }


def test_a_spec_that_cannot_be_read_is_answered_as_validate_answers_it(alice_client):
    spec = original_example()
    spec["layers"][0]["kernel_size"] = "big"
    response = post(alice_client, {"spec": spec, "edits": [{"op": "remove_layer", "layer": "relu1"}]})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_spec"
    assert response.json()["error"]["fields"] == {
        "spec.layers[0].kernel_size": ['conv1 (Conv2d): kernel_size must be a number, not the text "big".']
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"edits": [{"op": "remove_layer", "layer": "relu1"}]}, "spec"),
        ({"spec": original_example()}, "edits"),
        ({"spec": original_example(), "edits": []}, "edits"),
        ({"spec": original_example(), "edits": {"op": "remove_layer"}}, "edits"),
        ({"spec": original_example(), "edits": [{"op": "set_hyperparameter", "name": "seed", "value": 1}] * (MAX_EDITS + 1)}, "edits"),
        ({"spec": None, "edits": [{"op": "remove_layer", "layer": "relu1"}]}, "spec"),
        ([1, 2, 3], "non_field_errors"),
    ],
)  # fmt: skip
def test_a_malformed_request_is_a_400_naming_the_field(alice_client, body, field):
    response = post(alice_client, body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and field in error["fields"]


def test_malformed_json_and_a_huge_body_are_400s_not_500s(alice_client, settings):
    response = alice_client.post(URL, '{"spec": {"layers": [', content_type="application/json")
    assert response.status_code == 400 and "spec" in response.json()["error"]["fields"]

    settings.BUILDX_MAX_SPEC_BYTES = 2_000
    huge = {"spec": small([{"type": "ReLU"}] * 400), "edits": [{"op": "remove_layer", "layer": "relu1"}]}
    response = post(alice_client, huge)
    assert response.status_code == 400
    assert "too large" in response.json()["error"]["fields"]["spec"][0]


def test_a_spec_over_the_layer_limit_is_refused_before_any_edit(alice_client):
    spec = small([{"type": "ReLU"}] * 501)
    response = post(alice_client, {"spec": spec, "edits": [{"op": "remove_layer", "layer": "relu1"}]})

    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_spec"


@pytest.mark.parametrize(("depth", "code"), [(10, "invalid_edit"), (200, "too_deep")])
def test_a_deeply_nested_edit_is_refused_plainly(alice_client, depth, code):
    layer: dict = {"type": "ReLU"}
    for _ in range(depth):
        layer = {"type": "Residual", "layers": [layer]}
    edit = {"op": "insert_layer", "after": "conv1", "layer": layer}
    response = post(alice_client, {"spec": original_example(), "edits": [edit]})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code
    if code == "invalid_edit":
        assert error["fields"] == {"edits[0]": ["The JSON is nested too deeply."]}


def test_the_endpoint_is_in_the_openapi_schema(alice_client):
    schema = alice_client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    operation = schema["paths"]["/api/v1/designs/edit/"]["post"]
    assert "invalid_edit" in operation["description"]
    assert set(operation["responses"]) >= {"200", "400"}


edit_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
edits = st.fixed_dictionaries(
    {"op": st.sampled_from(OPS) | st.text(max_size=6)},
    optional={
        key: st.sampled_from(["conv1", "relu1", "pool1", "x", "ghost", "epochs", "kernel_size", "p"])
        | edit_values
        for key in ("layer", "after", "before", "name", "param", "value", "transform")
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(edits, min_size=1, max_size=3))
def test_random_edits_get_a_spec_or_a_400_never_a_500(alice_client, random_edits):
    response = post(alice_client, {"spec": original_example(), "edits": random_edits})

    assert response.status_code in (200, 400), response.content[:300]
    body = response.json()
    if response.status_code == 200:
        assert body["spec_hash"] == spec_hash(body["spec"])
    else:
        assert body["error"]["code"] in ("invalid_edit", "invalid")
    json.dumps(body)
