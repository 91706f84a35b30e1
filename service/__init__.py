"""Duet online service: FastAPI over ONNX towers, FAISS and Redis."""
