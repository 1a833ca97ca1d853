"""Generation on the CPU: time to the first token and tokens per second of a ~1M-parameter tiny GPT.

    python bench/generate.py [--n-embd 128] [--layers 5] [--context 128] [--tokens 300] [--repeats 5]
                             [--threads N] [--device cpu] [--no-cache]

The model is a language-model design compiled by the platform (TokenAndPosition, TransformerBlocks,
LayerNorm, a tied head) on the Python corpus's 97 characters, with freshly initialised weights: the speed
of generation does not depend on what the weights learnt. Each repeat generates --tokens tokens from a
short prompt with the runtime's generate_tokens (what the API and the generate page use), sampling with
temperature 0.8 and top-k 40, the model reading the last --context tokens. As the platform does for a
chain of layers like this one, it reads one new token at a time with a key-value cache while the text fits
the context, and the whole last window after that (positions shift, so the cache no longer holds):
--no-cache reads the whole window at every token, as before. The first token's time includes encoding the
prompt and the first forward pass. Prints the median over the
repeats. Torch's threads default to the platform's GENERATE_TORCH_THREADS (1). Targets (issue 16):
first token under 300 ms, at least 200 tokens/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "buildx.settings")

import django  # noqa: E402

django.setup()

import torch  # noqa: E402
from django.conf import settings  # noqa: E402

from designs.compiler import compile_spec, load_compiled  # noqa: E402
from designs.validation import validate  # noqa: E402
from sandbox.engine import buildx_runtime as rt  # noqa: E402
from sandbox.engine import corpus_facts  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=settings.GENERATE_TORCH_THREADS,
        help="torch threads (0: torch's default; default: GENERATE_TORCH_THREADS, what the platform uses)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-cache", action="store_true", help="read the whole window at every token")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    vocab = corpus_facts.PYTHON.vocab_size
    spec = {
        "model_name": "BenchGPT",
        "task": "language_model",
        "dataset": "python",
        "layers": [
            {"type": "TokenAndPosition", "name": "embed", "n_embd": args.n_embd},
            *(
                {"type": "TransformerBlock", "name": f"block{i + 1}", "n_head": args.heads}
                for i in range(args.layers)
            ),
            {"type": "LayerNorm", "name": "ln_f"},
            {"type": "Linear", "name": "head", "out_features": vocab, "bias": False, "tie_weights": True},
        ],
        "hyperparameters": {"context_length": args.context},
    }
    spec, report = validate(spec)
    assert report["valid"], report["errors"]
    model = load_compiled(compile_spec(spec, design_name="bench", version_number=1))["build_model"]()
    model.to(args.device).eval()
    params = sum(p.numel() for p in model.parameters())
    tokenizer = rt.Tokenizer(kind="char", alphabet=corpus_facts.PYTHON.alphabet)
    prompt = tokenizer.encode("def main(")
    firsts, rates, inside, outside = [], [], [], []
    fits = args.context - len(prompt) + 1  # new tokens generated while the text fits the context
    for repeat in range(args.repeats + 1):  # the first one warms up
        generator = torch.Generator(device=args.device).manual_seed(repeat)
        started = time.perf_counter()
        first = None
        count = 0
        at_fit = None
        for _token in rt.generate_tokens(
            model, prompt, max_new_tokens=args.tokens, context_length=args.context, temperature=0.8, top_k=40,
            generator=generator, kv_cache=not args.no_cache,
        ):  # fmt: skip
            count += 1
            if first is None:
                first = time.perf_counter() - started
            if count == fits:
                at_fit = time.perf_counter() - started
        total = time.perf_counter() - started
        if repeat:
            firsts.append(first or 0.0)
            rates.append(count / total)
            if at_fit is not None and count > fits:
                inside.append((fits - 1) / (at_fit - (first or 0.0)))
                outside.append((count - fits) / (total - at_fit))
    print(
        f"model: {params:,} parameters ({args.layers} blocks, n_embd {args.n_embd}, context {args.context}), "
        f"device {args.device}, torch threads {torch.get_num_threads()}, "
        f"key-value cache {'off' if args.no_cache else 'on'}"
    )
    print(f"first token: median {statistics.median(firsts) * 1000:.1f} ms (max {max(firsts) * 1000:.1f} ms)")
    print(f"tokens/s over {args.tokens} tokens: median {statistics.median(rates):.0f} (min {min(rates):.0f})")
    if inside:
        print(
            f"  of which: {statistics.median(inside):.0f} tokens/s while the text fits the context "
            f"({fits} tokens), {statistics.median(outside):.0f} tokens/s after (medians)"
        )


if __name__ == "__main__":
    main()
