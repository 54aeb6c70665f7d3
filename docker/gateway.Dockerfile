# One image for the gateway, the batch workers and Flower (three commands in docker-compose.yml
# and deploy/k8s). Serving dependencies only: torch/ultralytics stay in export/ tooling.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# the mount points exist, owned by the app user, so new named volumes start writable for it
RUN useradd --create-home --uid 10001 app \
    && mkdir -p /data/gateway /data/images /data/batch /data/enhance && chown -R app /data

WORKDIR /app
# numpy < 2 and OpenCV < 4.12 as everywhere else in the project (constraints.txt)
COPY pyproject.toml constraints.txt ./
COPY pcb pcb
COPY gateway gateway
COPY serving serving
COPY export export
COPY pi_edge pi_edge
COPY enhance enhance
COPY inference inference
COPY batch batch
COPY store store
COPY settings settings
COPY demo demo
RUN pip install -c constraints.txt -e .

USER app
EXPOSE 8080
# One uvicorn worker per container: Prometheus counters live per process, so scale by
# containers (or pods), each scraped on its own.
# HTTPS when TLS_CERT_FILE/TLS_KEY_FILE are set; X-Forwarded-For believed only from
# FORWARDED_ALLOW_IPS (the TLS-terminating proxy's address), never from anyone
CMD ["python", "-m", "gateway.serve"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=5 \
    CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/health', timeout=2)"
