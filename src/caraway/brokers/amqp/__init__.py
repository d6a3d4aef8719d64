"""The RabbitMQ broker (``amqp://``, ``pyamqp://``, ``amqps://``): transport, admin, mailbox,
event bus and the ``rpc://`` result backend, with Celery's entities, through
``caraway.clients.amqp``."""
