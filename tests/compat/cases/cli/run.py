"""The command line, from the user guide's "Workers" and "Monitoring" chapters."""

from proj import add

print("sent", add.delay(1, 2).get(timeout=10))
