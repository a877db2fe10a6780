"""The request pool: concurrency cap, rpm/tpm limits, retries with Retry-After, 429 back-off,
stall watchdog and a circuit breaker, in front of any teacher."""

from factory.pool.classify import PoolError, StallError
from factory.pool.core import Pool

__all__ = ["Pool", "PoolError", "StallError"]
