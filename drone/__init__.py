"""MAVLink drone link: telemetry, pose timeline, missions, simulator and log replay."""
