"""The scheduler process: re-queues work of dead or hung workers, dead-letters what ran out of
attempts, moves due delayed retries into the streams and removes consumers nobody runs."""

from redbatch.scheduler.service import Duty, Scheduler

__all__ = ["Duty", "Scheduler"]
