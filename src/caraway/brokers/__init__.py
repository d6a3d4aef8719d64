"""The broker plug-ins: what each broker does for caraway, behind narrow contracts.

:mod:`~caraway.brokers.contracts` says what a plug-in does (Transport, QueueAdmin, Backend,
ChordStore, Mailbox, EventBus and the optional interfaces); one folder per broker
(``memory``, ``sqlite``, ``redis``, ``amqp``) implements them over its client; and
:mod:`~caraway.brokers.registry` finds the plug-in a URL names. A broker folder imports its
client, the contracts and the protocol, never another folder or the registry.
"""
