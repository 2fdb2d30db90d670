"""The webhooks service (issue #8): merchants' endpoints, the events they subscribe to, and the signed,
retried delivery of those events. The pure rules (signatures, retry schedule, address guard, event
catalogue and envelope, input validation, secrets at rest) import neither gRPC nor SQLAlchemy."""
