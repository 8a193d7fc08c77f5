"""Quality and timeliness of what providers deliver (51号 art. 13, 16–18)."""
