"""Pure planning: fingerprint statistics -> :class:`~nnssl.config.plans.Plans`."""
