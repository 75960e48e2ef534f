"""Development tools: the demo, a small local MQTT broker for machines without Mosquitto, replay of
recorded streams through the daemon's pipeline, and scoring against injected ground truth."""
