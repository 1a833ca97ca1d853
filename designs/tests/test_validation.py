"""Validation: normalisation, exact shapes and parameter counts from PyTorch, and errors a beginner can act on."""

from __future__ import annotations

import pytest
from django.utils import translation

from designs import services
from designs.catalog import catalog_as_json
from designs.edits import apply_edits
from designs.tests.specs import forty_layers, original_example, small
from designs.validation import SpecError, analyse, normalise, spec_hash, validate


def codes(items: list[dict]) -> list[str]:
    return [item["code"] for item in items]


def apply_fix(spec: dict, fix: dict) -> dict:
    """What the editor has done with a report's fix (docs/contracts.md section 5): its edits, in order."""
    return apply_edits(spec, fix["edits"])


def test_lenet5_on_32x32_inputs_has_exactly_61706_parameters():
    spec, report = validate(services.starter_get(slug="lenet5_mnist")["spec"])

    assert report["input_shape"] == [1, 32, 32]
    assert report["totals"]["params"] == 61_706
    by_name = {row["name"]: row for row in report["layers"]}
    assert by_name["conv1"]["params"] == 156 and by_name["conv1"]["output_shape"] == [6, 28, 28]
    assert by_name["flatten"]["output_shape"] == [400]
    assert by_name["fc1"]["params"] == 48_120
    assert report["output_shape"] == [10] and report["ready_to_train"]


def test_resnet20_for_cifar10_has_272474_parameters():
    """ResNet-20 (He et al. 2015, CIFAR-10) is quoted as 0.27 M parameters; BuildX counts 272,474.

    The paper's CIFAR network uses "option A" shortcuts (identity with zero-padded extra channels, no
    parameters): 269,722 parameters. BuildX's Residual block projects with a 1×1 convolution + BatchNorm
    ("option B") where the shape changes, at the two stage transitions: 16→32 costs 512 + 64 and 32→64
    costs 2,048 + 128, i.e. 2,752 more: 269,722 + 2,752 = 272,474, still "0.27 M".
    """
    spec, report = validate(services.starter_get(slug="resnet20_cifar10")["spec"])

    assert report["totals"]["params"] == 272_474
    residuals = [row for row in report["layers"] if row["type"] == "Residual"]
    assert len(residuals) == 9
    projections = [row["shortcut"] for row in residuals if row["shortcut"]["kind"] == "projection"]
    assert [(p["in_channels"], p["out_channels"], p["stride"], p["params"]) for p in projections] == [
        (16, 32, 2, 576),
        (32, 64, 2, 2_176),
    ]
    assert report["output_shape"] == [10]


def test_the_original_buildx_example_is_accepted_and_reports_its_missing_classifier_head():
    spec, report = validate(original_example())

    assert spec["layers"][0] == {
        "type": "Conv2d",
        "name": "conv1",
        "in_channels": 3,
        "out_channels": 32,
        "kernel_size": 3,
        "stride": 1,
        "padding": 0,
        "dilation": 1,
        "groups": 1,
        "bias": True,
    }
    assert spec["preprocessing"] == [{"type": "Resize", "size": [32, 32]}, {"type": "ToTensor"}]
    assert report["valid"] and not report["ready_to_train"]
    assert report["output_shape"] == [32, 15, 15]
    [warning] = report["warnings"]
    assert warning["code"] == "output_mismatch" and warning["layer"] == "pool1"
    assert "32×15×15" in warning["message"] and "10 class scores" in warning["message"]
    assert "Flatten" in warning["hint"] and "Linear" in warning["hint"]
    assert warning["fix"]["edits"] == [
        {"op": "insert_layer", "after": "pool1", "layer": {"type": "Flatten", "name": "flatten1"}},
        {
            "op": "insert_layer",
            "after": "flatten1",
            "layer": {"type": "Linear", "name": "fc1", "out_features": 10},
        },
    ]

    fixed_spec, fixed = validate(apply_fix(spec, warning["fix"]))
    assert fixed["ready_to_train"] and fixed["output_shape"] == [10]
    assert fixed["totals"]["params"] == 896 + 32 * 15 * 15 * 10 + 10


def test_it_accepts_the_original_backends_ids_and_input_wiring():
    spec, report = validate(
        small(
            [
                {"type": "Conv2d", "id": "c-1", "input": "x", "out_channels": 8, "padding": 1},
                {"type": "Conv2d", "id": "c-2", "input": "c-1", "out_channels": 8, "padding": 1},
                {"type": "Add", "id": "sum", "input": ["c-2", "c-1"]},
                {"type": "Flatten", "id": 7},
                {"type": "Linear", "id": "head", "params": {"out_features": 10}},
            ],
            hyperparameters={"use_cloud": True},
        )
    )

    assert [layer["name"] for layer in spec["layers"]] == ["c_1", "c_2", "sum", "layer_7", "head"]
    assert "input" not in spec["layers"][0] and "input" not in spec["layers"][1]
    assert spec["layers"][2]["input"] == ["c_2", "c_1"]
    assert "use_cloud" not in spec["hyperparameters"]  # the original's GPU flag: read, and dropped
    assert "use_cloud" not in [p["name"] for p in catalog_as_json()["hyperparameters"]]  # not offered
    assert report["valid"] and report["ready_to_train"], report["errors"]
    assert report["layers"][2]["input_shape"] == [[8, 8, 8], [8, 8, 8]]


def test_unnamed_layers_get_names_and_the_same_design_gets_the_same_hash():
    spec, _report = validate(
        small(
            [{"type": "conv2d", "out_channels": 4}, {"type": "ReLU"}, {"type": "Conv2d", "out_channels": 4}]
        )
    )
    assert [layer["name"] for layer in spec["layers"]] == ["conv1", "relu1", "conv2"]

    explicit = small(
        [
            {"type": "Conv2d", "name": "conv1", "out_channels": 4, "kernel_size": [3, 3]},
            {"type": "ReLU", "name": "relu1", "input": "conv1"},
            {"type": "Conv2d", "name": "conv2", "out_channels": 4, "stride": 1},
        ]
    )
    assert spec_hash(normalise(explicit)) == spec_hash(spec)


def test_unknown_keys_wrong_types_and_out_of_range_values_name_the_layer_and_field():
    with pytest.raises(SpecError) as caught:
        normalise(
            small(
                [
                    {"type": "Conv2d", "name": "conv1", "out_channels": "32", "kernal_size": 3},
                    {"type": "MaxPool2d", "name": "pool1", "kernel_size": 99},
                    {"type": "Dense", "name": "fc"},
                ],
                hyperparameters={"epochs": 0, "optimizer": "rmsprop", "batch_size": True},
            )
        )
    fields = caught.value.fields

    assert fields["layers[0].out_channels"] == [
        'conv1 (Conv2d): out_channels must be a number, not the text "32".'
    ]
    assert "Did you mean kernel_size?" in fields["layers[0].kernal_size"][0]
    assert fields["layers[1].kernel_size"] == [
        "pool1 (MaxPool2d): kernel_size must be between 1 and 31; got 99."
    ]
    assert 'there is no layer type "Dense"' in fields["layers[2].type"][0]
    assert "epochs must be between 1 and 1000" in fields["hyperparameters.epochs"][0]
    assert "sgd, adam, adamw" in fields["hyperparameters.optimizer"][0]
    assert "whole number" in fields["hyperparameters.batch_size"][0]


def test_hyperparameters_have_defaults_and_bounds():
    spec = normalise(small([{"type": "Flatten"}, {"type": "Linear", "out_features": 10}]))

    assert spec["hyperparameters"] == {
        "epochs": 10,
        "batch_size": 64,
        "learning_rate": 0.001,
        "optimizer": "adam",
        "momentum": 0.9,
        "weight_decay": 0.0,
        "lr_schedule": "none",
        "lr_step_size": None,
        "lr_gamma": 0.1,
        "label_smoothing": 0.0,
        "seed": 42,
        "val_split": 0.1,
    }
    with pytest.raises(SpecError) as caught:
        normalise(
            small([], hyperparameters={"label_smoothing": 0.9, "val_split": 0.99, "lr_schedule": "cyclic"})
        )
    assert set(caught.value.fields) == {
        "hyperparameters.label_smoothing",
        "hyperparameters.val_split",
        "hyperparameters.lr_schedule",
    }


def test_channels_and_features_are_inferred_and_a_wrong_given_value_says_what_it_should_be():
    spec, report = validate(
        small(
            [
                {"type": "Conv2d", "name": "conv1", "out_channels": 16, "padding": 1},
                {"type": "BatchNorm2d", "name": "bn1"},
                {"type": "Conv2d", "name": "conv2", "in_channels": 8, "out_channels": 16},
                {"type": "Flatten", "name": "flatten"},
                {"type": "Linear", "name": "fc", "out_features": 10},
            ]
        )
    )
    rows = {row["name"]: row for row in report["layers"]}

    assert rows["conv1"]["inferred"] == {"in_channels": 1}
    assert rows["bn1"]["inferred"] == {"num_features": 16}
    assert rows["fc"]["inferred"] == {"in_features": 16 * 6 * 6}
    [error] = report["errors"]
    assert (
        error["code"] == "wrong_inferred_value"
        and error["layer"] == "conv2"
        and error["field"] == "in_channels"
    )
    assert error["message"] == "conv2's in_channels is 8, but bn1 gives it 16."
    assert error["fix"] == {
        "label": "Set in_channels to 16",
        "edits": [{"op": "set_layer_param", "layer": "conv2", "param": "in_channels", "value": 16}],
    }
    # The stored spec keeps only what the user gave: inferred values stay out of it.
    assert "in_channels" not in spec["layers"][0] and spec["layers"][2]["in_channels"] == 8


def test_a_pool_that_shrinks_the_image_to_nothing_says_which_and_what_to_do():
    _spec, report = validate(
        small(
            [
                {"type": "Conv2d", "name": "conv1", "out_channels": 8, "padding": 1},
                {"type": "MaxPool2d", "name": "pool1"},
                {"type": "MaxPool2d", "name": "pool2"},
                {"type": "MaxPool2d", "name": "pool3"},
                {"type": "MaxPool2d", "name": "pool4"},
                {"type": "Flatten", "name": "flatten"},
                {"type": "Linear", "name": "fc", "out_features": 10},
            ]
        )
    )

    [error] = report["errors"]
    assert error["layer"] == "pool4" and error["code"] == "shrinks_to_nothing"
    assert error["message"] == "pool4 would shrink 1×1 to 0×0."
    assert error["hint"] == "Remove a pooling layer, or pad the convolution before it."
    statuses = [(row["name"], row["status"]) for row in report["layers"]]
    assert statuses[4:] == [("pool4", "error"), ("flatten", "blocked"), ("fc", "blocked")]
    assert report["layers"][3]["output_shape"] == [8, 1, 1]
    assert not report["valid"]


def test_a_kernel_larger_than_its_input_suggests_padding():
    _spec, report = validate(small([{"type": "Conv2d", "name": "big", "out_channels": 4, "kernel_size": 11}]))

    [error] = report["errors"]
    assert error["code"] == "kernel_too_large"
    assert error["message"] == "big's 11×11 kernel does not fit its 8×8 input."
    assert "set padding to 2" in error["hint"]


def test_a_linear_layer_on_an_image_offers_to_add_flatten():
    spec, report = validate(
        small(
            [
                {"type": "Conv2d", "name": "conv", "out_channels": 4},
                {"type": "Linear", "name": "fc", "out_features": 10},
            ]
        )
    )

    [error] = report["errors"]
    assert error["code"] == "needs_flat" and error["layer"] == "fc"
    assert error["fix"]["edits"] == [
        {"op": "insert_layer", "before": "fc", "layer": {"type": "Flatten", "name": "flatten1"}}
    ]
    _spec, fixed = validate(apply_fix(spec, error["fix"]))
    assert fixed["ready_to_train"]


def test_graph_errors_name_the_layers():
    _spec, report = validate(
        small(
            [
                {"type": "Conv2d", "name": "a", "out_channels": 4, "padding": 1, "input": "c"},
                {"type": "Conv2d", "name": "b", "out_channels": 4, "padding": 1, "input": "ghost"},
                {"type": "Conv2d", "name": "c", "out_channels": 4, "padding": 1, "input": "a"},
                {"type": "Conv2d", "name": "lonely", "out_channels": 4, "padding": 1, "input": "x"},
                {"type": "Add", "name": "add", "input": ["c"]},
            ]
        )
    )
    by_code = {error["code"]: error for error in report["errors"]}

    assert by_code["cycle"]["layer"] == "a" and "a and c form a cycle" in by_code["cycle"]["message"]
    assert by_code["dangling_input"]["layer"] == "b" and '"ghost"' in by_code["dangling_input"]["message"]
    assert by_code["merge_needs_inputs"]["layer"] == "add"
    unused = sorted(error["layer"] for error in report["errors"] if error["code"] == "unused_branch")
    assert unused == ["b", "lonely"]


def test_add_needs_the_same_shapes_and_concat_joins_channels():
    _spec, report = validate(
        small(
            [
                {"type": "Conv2d", "name": "a", "out_channels": 4, "padding": 1},
                {"type": "Conv2d", "name": "b", "out_channels": 6, "padding": 1, "input": "x"},
                {"type": "Concat", "name": "cat", "input": ["a", "b"]},
                {"type": "Conv2d", "name": "d", "out_channels": 4},
                {"type": "Add", "name": "add", "input": ["d", "a"]},
            ]
        )
    )

    assert report["layers"][2]["output_shape"] == [10, 8, 8]
    [error] = report["errors"]
    assert error["code"] == "add_shapes" and error["layer"] == "add"
    assert "d (4×6×6), a (4×8×8)" in error["message"]


def test_a_residual_block_projects_its_skip_when_the_shape_changes():
    _spec, report = validate(
        small(
            [
                {"type": "Conv2d", "name": "stem", "out_channels": 8, "padding": 1},
                {
                    "type": "Residual",
                    "name": "res",
                    "layers": [
                        {"type": "Conv2d", "name": "r_conv", "out_channels": 16, "stride": 2, "padding": 1},
                        {"type": "ReLU", "name": "r_relu"},
                    ],
                },
                {"type": "Flatten"},
                {"type": "Linear", "out_features": 10},
            ]
        )
    )

    res = report["layers"][1]
    assert res["output_shape"] == [16, 4, 4]
    assert res["shortcut"] == {
        "kind": "projection",
        "stride": 2,
        "in_channels": 8,
        "out_channels": 16,
        "params": 8 * 16 + 2 * 16,
    }
    assert res["params"] == (8 * 9 * 16 + 16) + 8 * 16 + 2 * 16
    assert [row["parent"] for row in report["layers"][2:4]] == ["res", "res"]
    assert report["totals"]["params"] == 80 + res["params"] + (256 * 10 + 10)


def test_softmax_before_the_loss_and_a_huge_linear_are_warnings():
    _spec, report = validate(
        small(
            [
                {"type": "Flatten"},
                {"type": "Linear", "name": "wide", "out_features": 65536},
                {"type": "Linear", "name": "fc", "out_features": 10},
                {"type": "Softmax", "name": "probs"},
            ]
        ),
    )

    assert report["valid"]
    warnings = {w["code"]: w for w in report["warnings"]}
    assert warnings["softmax_before_loss"]["fix"] == {
        "label": "Remove probs",
        "edits": [{"op": "remove_layer", "layer": "probs"}],
    }
    assert warnings["large_linear"]["layer"] == "wide"  # 64 × 65,536 weights


def test_a_design_over_this_servers_limits_is_valid_but_not_ready_to_train(settings):
    settings.RUNS_MAX_EPOCHS, settings.RUNS_MAX_PARAMS = 100, 5_000_000  # the defaults
    spec, report = validate(
        small(
            [
                {"type": "Flatten"},
                {"type": "Linear", "name": "wide", "out_features": 65536},  # 64 × 65,536 + 65,536
                {"type": "ReLU"},
                {"type": "Linear", "name": "mid", "out_features": 32},  # 65,536 × 32 + 32
                {"type": "ReLU"},
                {"type": "Linear", "name": "fc", "out_features": 10},
            ],
            hyperparameters={"epochs": 150},
        )
    )

    # It compiles (and trains at home), but this server will not train it: the report says so, with the
    # limit and what to change, before anyone presses Train.
    assert report["valid"] and not report["ready_to_train"]
    assert report["limits"] == {"max_epochs": 100, "max_params": 5_000_000}
    blockers = {b["code"]: b for b in report["blockers"]}
    assert list(blockers) == ["epochs_over_limit", "params_over_limit"]
    epochs = blockers["epochs_over_limit"]
    assert epochs["message"] == "150 epochs is more than this server trains: at most 100."
    assert epochs["path"] == "hyperparameters.epochs" and "Set epochs to 100 or fewer" in epochs["hint"]
    params = blockers["params_over_limit"]
    assert "6,357,354 parameters" in params["message"] and "at most 5,000,000" in params["message"]
    assert params["layer"] == "wide" and "The largest block, wide, holds 4,259,840" in params["hint"]

    fixed, report = validate(apply_fix(spec, epochs["fix"]))
    assert fixed["hyperparameters"]["epochs"] == 100
    assert codes(report["blockers"]) == ["params_over_limit"]

    settings.RUNS_MAX_PARAMS = 10_000_000  # a bigger server: the same design is ready
    _spec, report = validate(fixed)
    assert report["blockers"] == [] and report["ready_to_train"]

    settings.RUNS_MAX_PARAMS = 5_000_000
    with translation.override("ko"):  # in the viewer's language, numbers and names kept
        _spec, report = validate(spec)
    assert [b["message"] for b in report["blockers"]] == [
        "150 에포크는 이 서버에서 학습할 수 있는 것보다 많습니다. 최대 100 에포크까지입니다.",
        "모델의 파라미터가 6,357,354개입니다. 이 서버는 파라미터가 최대 5,000,000개인 모델까지 학습합니다.",
    ]
    assert (
        "wide" in report["blockers"][1]["hint"]
        and report["blockers"][0]["fix"]["label"] == "epochs를 100(으)로"
    )


def test_the_report_has_totals_macs_and_a_training_memory_estimate():
    _spec, report = validate(forty_layers())

    assert len(report["layers"]) == 40 and report["ready_to_train"]
    totals = report["totals"]
    assert totals["params"] == sum(row["params"] for row in report["layers"])
    conv = report["layers"][0]
    assert conv["macs"] == 16 * 32 * 32 * 3 * 9
    memory = report["memory"]
    assert memory["weights_bytes"] == totals["params"] * 4
    assert memory["optimizer_bytes"] == 2 * memory["weights_bytes"]  # Adam keeps two values per weight
    assert memory["activations_bytes"] == (totals["activation_bytes"] + 3 * 32 * 32 * 4) * 64
    assert memory["total_bytes"] == sum(
        v for k, v in memory.items() if k not in ("batch_size", "total_bytes")
    )


def test_preprocessing_changes_the_input_shape_and_normalize_checks_channels():
    _spec, report = validate(
        small(
            [{"type": "Flatten"}, {"type": "Linear", "out_features": 10}],
            dataset="cifar-10",
            preprocessing=[
                {"type": "Grayscale"},
                {"type": "CenterCrop", "size": 24},
                {"type": "Normalize", "mean": [0.5, 0.5, 0.5]},
            ],
        )
    )

    assert report["input_shape"] == [1, 24, 24]
    [error] = report["errors"]
    assert error["code"] == "normalize_channels" and error["path"] == "preprocessing[2]"


def test_hostile_sizes_are_refused_quickly():
    layers = [{"type": "Upsample", "scale_factor": 8.0}] * 6
    _spec, report = validate(small(layers))
    assert report["errors"][0]["code"] == "too_large"

    with pytest.raises(SpecError) as caught:
        normalise(small([{"type": "ReLU"}] * 501))
    assert "at most 500 layers" in caught.value.fields["layers"][0]

    nested: dict = {"type": "ReLU"}
    for _ in range(10):
        nested = {"type": "Residual", "layers": [nested]}
    with pytest.raises(SpecError) as caught:
        normalise(small([nested]))
    assert any("nested more than 4 deep" in m for messages in caught.value.fields.values() for m in messages)


def test_analyse_is_deterministic_for_a_stored_spec():
    spec = normalise(forty_layers())
    assert analyse(spec) == analyse(spec)
