"""What ``redbatch dlq`` does to a queue's dead letters (``letters``)."""
