"""Redis Cluster (``redis+cluster://``): broker, results, remote control and events on a
cluster of masters, every queue's (and chord's) keys in one hash slot."""
