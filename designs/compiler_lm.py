"""The compiler's language-model half: a validated `language_model` spec → a script that reads like nanoGPT.

The same contract as the image scripts (docs/contracts.md section 1): constants at the top, the block
classes the design uses (copied from designs/sequence.py, the text validation measures), one model class
named after the design with one attribute per block and shape comments, `build_model()` and a short
`train(model, data)` loop: random windows, AdamW with warm-up and a cosine, gradient clipping, bf16
autocast on CUDA, a validation estimate, a sample and a checkpoint per epoch.
"""

from __future__ import annotations

import json

from designs import sequence
from designs.catalog import corpus_lookup
from designs.script_parts import (
    OPTIMIZER_CALLS,
    align_comments,
    align_constants,
    class_name,
    forward_lines,
    layer_call,
    script_head,
    script_tail,
    shape_comment,
)

SAMPLE_TOKENS = 120  # tokens of the sample written after each epoch
EVAL_BATCHES = 20  # random validation windows per epoch: an estimate, as nanoGPT's estimate_loss


def _forward_lines(spec: dict, rows: dict[str, dict]) -> list[tuple[str, str | None]]:
    return forward_lines(spec["layers"], rows, lambda layer: rows[layer["name"]]["inputs"], input_alias="idx")


def compile_lm(spec: dict, report: dict, *, design_name: str, version_number: int) -> str:
    """The script of a valid language-model spec (the report is validation's for that spec)."""
    model = class_name(spec["model_name"])
    filename = f"{model.lower()}.py"
    corpus = corpus_lookup(spec["dataset"])
    if corpus is None:  # validation normalises the name: only a spec that skipped it gets here
        raise ValueError(f"Unknown corpus {spec['dataset']!r}: compile a validated spec.")
    hp = spec["hyperparameters"]
    rows = {row["name"]: row for row in report["layers"]}
    T, V = report["dataset"]["context_length"], report["dataset"]["vocab_size"]

    how = (
        f"Train it here with `python {filename}` (needs torch and buildx_runtime.py beside it; the "
        f"{corpus.name} corpus is made on the spot)."
        if hp["tokenizer"] == "char"
        else f"Train it here with `python {filename} --data {corpus.name}-bpe.pt`, the BuildX text cache of "
        "its BPE tokenizer (needs torch and buildx_runtime.py beside it)."
    )
    out = script_head(
        model=model,
        design_name=design_name,
        version_number=version_number,
        about=[
            "A language model: it reads token ids and scores the next token at every position.",
            *_wrap(how),
        ],
        imports=[
            "import math",
            "",
            "import torch",
            "import torch.nn.functional as F",
            "from torch import nn",
        ],
    )
    out += align_constants(
        [
            ('TASK = "language_model"', None),
            (f"DATASET = {json.dumps(corpus.name)}", None),
            (f"TOKENIZER = {json.dumps(hp['tokenizer'])}", "char | bpe"),
            (f"VOCAB_SIZE = {V}", "tokens the model reads and scores"),
            (f"CONTEXT_LENGTH = {T}", "tokens the model sees at once (T)"),
            ("INPUT_SHAPE = (CONTEXT_LENGTH,)", "(T,) token ids"),
            (f"SAMPLE_PROMPT = {json.dumps(corpus.sample_prompt)}", "what the samples start from"),
        ]
    )
    out += ["", "# Hyperparameters"]
    out += align_constants(
        [
            (f"EPOCHS = {hp['epochs']}", None),
            (f"STEPS_PER_EPOCH = {hp['steps_per_epoch']}", "training steps between validations"),
            (f"BATCH_SIZE = {hp['batch_size']}", "windows per step"),
            (f"LEARNING_RATE = {hp['learning_rate']!r}", "the peak, after the warm-up"),
            (f"MIN_LEARNING_RATE = {hp['learning_rate'] / 10!r}", "where the cosine ends"),
            (f"OPTIMIZER = {json.dumps(hp['optimizer'])}", "sgd | adam | adamw"),
            (f"MOMENTUM = {hp['momentum']!r}", "SGD only"),
            (f"WEIGHT_DECAY = {hp['weight_decay']!r}", None),
            (f"LR_SCHEDULE = {json.dumps(hp['lr_schedule'])}", "none | cosine"),
            (f"WARMUP_STEPS = {hp['warmup_steps']}", None),
            (f"GRAD_CLIP = {hp['grad_clip']!r}", "largest gradient norm; 0 = no clipping"),
            (f"SEED = {hp['seed']}", None),
            (f"EVAL_BATCHES = {EVAL_BATCHES}", "validation windows per epoch: an estimate"),
            (f"SAMPLE_TOKENS = {SAMPLE_TOKENS}", "tokens of the sample after each epoch"),
        ]
    )

    init: list[tuple[str, str | None]] = []
    tie_lines: list[str] = []
    for layer in spec["layers"]:
        if layer["type"] == "Add":
            continue
        row = rows[layer["name"]]
        init.append(
            (
                f"        self.{layer['name']} = {layer_call(layer, row['inferred'])}",
                shape_comment(row["output_shape"]),
            )
        )
        if row.get("tied_to"):
            embedding = next(lay for lay in spec["layers"] if lay["name"] == row["tied_to"])
            table = "weight" if embedding["type"] == "Embedding" else "token.weight"
            tie_lines += [
                "        # Weight tying: the head scores tokens with the embedding's own table (one matrix, shared).",
                f"        self.{layer['name']}.weight = self.{embedding['name']}.{table}",
            ]
    classes = sequence.script_classes({layer["type"] for layer in spec["layers"]})
    out += script_tail(
        model=model,
        classes=classes,
        init=[*align_comments(init), *tie_lines],
        forward=["        # x: (B, T) token ids", *align_comments(_forward_lines(spec, rows))],
        train=_train_function(hp),
        main_call="rt.main(build_model, train, dataset=DATASET, task=TASK, context_length=CONTEXT_LENGTH, seed=SEED)",
    )
    return "\n".join(out)


def _wrap(text: str, width: int = 100) -> list[str]:
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line]


def _train_function(hp: dict) -> list[str]:
    optimizer = OPTIMIZER_CALLS[hp["optimizer"]]
    return [
        "def learning_rate(step: int) -> float:",
        '    """A linear warm-up over WARMUP_STEPS, then a cosine from LEARNING_RATE down to MIN_LEARNING_RATE."""',
        "    if step < WARMUP_STEPS:",
        "        return LEARNING_RATE * (step + 1) / WARMUP_STEPS",
        '    if LR_SCHEDULE == "none":',
        "        return LEARNING_RATE",
        "    progress = min(1.0, (step - WARMUP_STEPS) / max(1, EPOCHS * STEPS_PER_EPOCH - WARMUP_STEPS))",
        "    return MIN_LEARNING_RATE + 0.5 * (1.0 + math.cos(math.pi * progress)) * (LEARNING_RATE - MIN_LEARNING_RATE)",
        "",
        "",
        "def train(model: nn.Module, data: rt.TextData) -> None:",
        "    rt.seed_everything(SEED)",
        f"    optimizer = {optimizer}",
        "    start_epoch = rt.resume(model=model, optimizer=optimizer)  # 0 on a fresh run",
        "",
        "    for epoch in range(start_epoch + 1, EPOCHS + 1):",
        "        model.train()",
        "        total_loss = torch.zeros((), device=data.device)",
        "        correct = torch.zeros((), device=data.device)",
        "        for step in rt.steps(epoch, STEPS_PER_EPOCH):",
        "            for group in optimizer.param_groups:",
        '                group["lr"] = learning_rate(step)',
        "            x, y = data.train.batch(BATCH_SIZE, CONTEXT_LENGTH)  # (B, T) each: y is x one token later",
        "            with rt.autocast():",
        "                logits = model(x)  # (B, T, VOCAB_SIZE)",
        "                loss = F.cross_entropy(logits.reshape(-1, VOCAB_SIZE).float(), y.reshape(-1))",
        "            optimizer.zero_grad(set_to_none=True)",
        "            loss.backward()",
        "            rt.clip_gradients(model, GRAD_CLIP)",
        "            optimizer.step()",
        "            total_loss += loss.detach()  # stays on the device: no sync per step",
        "            correct += rt.next_token_accuracy(logits, y)  # share of positions whose next token scored highest",
        "        val_loss, val_acc = rt.evaluate_lm(model, data.val, batch_size=BATCH_SIZE,",
        "                                           context_length=CONTEXT_LENGTH, batches=EVAL_BATCHES)",
        "        rt.report_epoch(epoch=epoch, epochs=EPOCHS,",
        "                        train_loss=total_loss.item() / STEPS_PER_EPOCH,",
        "                        train_acc=correct.item() / STEPS_PER_EPOCH,",
        "                        val_loss=val_loss, val_acc=val_acc,",
        '                        lr=optimizer.param_groups[0]["lr"])',
        "        sample = rt.generate_text(model, data.tokenizer, SAMPLE_PROMPT, max_new_tokens=SAMPLE_TOKENS,",
        "                                  context_length=CONTEXT_LENGTH, temperature=0.8, top_k=20)",
        "        rt.report_sample(epoch=epoch, prompt=SAMPLE_PROMPT, text=sample)",
        "        rt.save_checkpoint(model=model, optimizer=optimizer, epoch=epoch, metric=val_acc)",
    ]
