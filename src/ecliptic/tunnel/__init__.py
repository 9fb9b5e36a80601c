"""Tunnel gateway: SSH reverse tunnels from platforms, an nginx front routed by subdomain."""
