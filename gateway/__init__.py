"""The HTTP gateway: producers' front door, people's inbox/settings API, and the dashboard."""
