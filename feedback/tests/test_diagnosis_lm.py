"""The diagnosis of a language model's run: curve and learning-rate rules only, with suggestions that apply."""

from __future__ import annotations

from designs.edits import apply_edit
from designs.validation import validate
from feedback.diagnosis import diagnose

SPEC = {
    "model_name": "Tiny GPT",
    "task": "language_model",
    "dataset": "addition",
    "layers": [
        {"type": "TokenAndPosition", "name": "embed", "n_embd": 32},
        {"type": "TransformerBlock", "name": "block1", "n_head": 2},
        {"type": "LayerNorm", "name": "ln_f"},
        {"type": "Linear", "name": "head", "out_features": 13},
    ],
    "hyperparameters": {"context_length": 20, "epochs": 8},
}


def test_an_overfitting_language_model_gets_suggestions_that_keep_it_valid():
    spec, report = validate(SPEC)
    epochs = [
        {"epoch": e, "train_loss": 1.6 - 0.15 * e, "val_loss": 1.3 + 0.08 * max(0, e - 3),
         "train_acc": 0.40 + 0.07 * e, "val_acc": 0.50 - 0.02 * max(0, e - 3), "lr": 0.001}
        for e in range(1, 9)
    ]  # fmt: skip
    findings = diagnose(epochs=epochs, test={"loss": 1.7, "accuracy": 0.4}, spec=spec, report=report)

    assert findings and "overfitting" in [f.code for f in findings]
    assert not {"confused_classes", "oversized_linear", "underfitting"} & {f.code for f in findings}
    for finding in findings:
        for suggestion in finding.suggestions:
            assert suggestion["op"] != "add_preprocessing"
            changed, changed_report = validate(apply_edit(spec, suggestion))
            assert changed_report["valid"], (suggestion, changed_report["errors"])
