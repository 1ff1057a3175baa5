"""The optional AMQP bridge: the original http_downloader's messages for its neighbours.

Off by default (`amqp.enabled`). Modules: mapping.py (events → the original's
queues and JSON, stable message ids), publisher.py (the log from a checkpoint,
confirmed, in order), consumer.py (sync orders from GL_SYNC_HTTP_SOURCE_ORDERS),
bridge.py (one connection, reconnects with a backoff; `distleech amqp bridge`).
"""
