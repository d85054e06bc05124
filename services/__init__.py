"""HTTP services in front of and beside the pipeline (FastAPI on uvicorn)."""
