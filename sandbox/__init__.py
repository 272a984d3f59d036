"""Local provider sandbox: APNs, FCM, SendGrid and Twilio HTTP APIs, with failure injection.

It shares no code with sinks/: it speaks each provider's documented API (see
../shared/PROVIDERS.md) so the real client libraries work against it unchanged.
"""
