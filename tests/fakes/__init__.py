"""Fakes that stand in for cloud services in tests (real SDKs talk to them over HTTP)."""
