"""Why an order is not processed: the answers the API turns into 409 and 422."""

from __future__ import annotations


class OrderConflictError(Exception):
    """The order cannot be processed as sent: out of order, or a key reused for another order (409)."""


class OrderRejectedError(ValueError):
    """The order's values cannot be true: a close outside the price band of the last close (422)."""
