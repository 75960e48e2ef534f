"""The gateway runtime: samples -> triggers -> classified events -> the durable outbox -> MQTT.

Everything the ``stopewatch run`` daemon executes lives here, and nothing here imports TensorFlow:
``dsp`` (streaming filters and STA/LTA), ``pipeline`` (trigger, event windows), ``preprocess`` and
``model`` (what the int8 model sees, and the LiteRT interpreter), ``features``, ``messages`` (the event
message), ``outbox`` and ``mqtt`` (durable delivery), ``config`` and ``daemon``.
"""
