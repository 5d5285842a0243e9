# One image for every service; docker-compose.yml picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY feature_store feature_store
COPY services services
COPY models models
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir .
ENV RECSYS_DATA_DIR=/data
EXPOSE 8000
CMD ["python", "-m", "services.kit.serve", "--factory", "services.features.app:app_factory", "--host", "0.0.0.0", "--port", "8000"]
