"""Outbound HTTP: the GrsAI client, the pooled clients with their watchdog, the SSRF guard and
Standard Webhooks signing."""
