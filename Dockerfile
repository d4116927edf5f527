# Tansuo service image. CPU-only PyTorch from PyTorch's CPU index (an unpinned torch from PyPI
# would pull multi-GB CUDA wheels); everything else from the project's own pyproject.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TANSUO_HOME=/data
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir . \
    && pip install --no-cache-dir --no-deps --ignore-requires-python obp==0.5.7
VOLUME /data
EXPOSE 8000
CMD ["tansuo", "serve", "--host", "0.0.0.0", "--port", "8000"]
