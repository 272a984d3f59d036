"""Local provider sandbox: APNs, FCM, SendGrid, Twilio, Amazon SES v2, Mailgun and Vonage SMS
HTTP APIs, with failure injection.

It shares no code with sinks/: it speaks each provider's documented API (see
../shared/PROVIDERS.md) so the real client libraries work against it unchanged.
"""
