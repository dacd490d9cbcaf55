"""Fixtures for real RabbitMQ and Redis live in tests/services.py."""

pytest_plugins = ["tests.services"]
