# MLflow tracking server with the Postgres and S3 (MinIO) clients.
FROM python:3.11-slim
RUN pip install --no-cache-dir mlflow==3.17.2 psycopg2-binary boto3
EXPOSE 5000
