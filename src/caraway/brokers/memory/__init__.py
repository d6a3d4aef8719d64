"""The in-process broker (``memory://``): transport, admin, result backend, mailbox and event
bus for eager mode and tests. Nothing crosses a process; a fork gets a frozen copy."""
