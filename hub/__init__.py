"""autoresearch.hub: FastAPI app, storage, dedup, suggestions and pages."""
