# One image for every BuildX process (web, worker, trainer); docker-compose.yml picks the command.
#   docker build -t buildx .                          # CPU torch: web and the default worker
#   docker build -t buildx-gpu --build-arg TORCH_VARIANT=cu128 .   # CUDA torch: the trainer
FROM python:3.11-slim-bookworm

ARG TORCH_VARIANT=cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBUG=0 \
    STATIC_ROOT=/srv/static \
    MEDIA_ROOT=/srv/media \
    BUILDX_DATA_DIR=/srv/data

# bubblewrap isolates the training child (the sandbox falls back to rlimits where it cannot run).
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 buildx \
    && mkdir -p /srv/static /srv/media /srv/data \
    && chown -R buildx:buildx /srv

WORKDIR /app
COPY requirements.txt .
# torch first, from the index of the wanted build; requirements.txt's torch==2.13.0 is then satisfied.
RUN pip install torch==2.13.0 --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
    && pip install -r requirements.txt

COPY --chown=buildx:buildx . .
# Collected again at start into the shared volume (see docker-compose.yml); this checks it works.
RUN SECRET_KEY=build-only-collectstatic-key BUILDX_VALIDATION_WARMUP=0 \
    python manage.py collectstatic --noinput --verbosity 0

USER buildx
EXPOSE 8000
# --proxy-headers: nginx passes the client's address in X-Forwarded-For (allauth's rate limits use it).
CMD ["daphne", "--bind", "0.0.0.0", "--port", "8000", "--proxy-headers", "buildx.asgi:application"]
