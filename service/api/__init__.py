"""The HTTP face: routes, ASGI helpers, authentication, body reading, OpenAPI, request context."""
