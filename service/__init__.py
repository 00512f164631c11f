"""FastAPI service: event store, search, clips, live feed, MQTT and the web UI."""
