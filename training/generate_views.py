"""The generate page of a language-model run (the API writes the text: generate_api.py)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from library import text_datasets
from training import generate, predict
from training.models import Run


@login_required
def generate_page(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(
        Run.objects.select_related("design_version__design", "code_artifact"), pk=pk, owner=request.user
    )
    refused = None
    try:
        generate.check_generatable(run)
    except predict.PredictRefused as exc:
        refused = exc.message
    corpus = text_datasets.lookup_corpus(run.dataset.partition(":")[0])  # "python:bpe512": the corpus
    prompt = corpus.sample_prompt if corpus else ""
    context = {"run": run, "refused": refused, "prompt": prompt, "max_new_tokens": generate.MAX_NEW_TOKENS}
    return render(request, "training/generate.html", context, status=409 if refused else 200)
