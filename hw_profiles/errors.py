"""Errors raised by hardware profiles."""


class ProfileError(ValueError):
    """A hardware profile that cannot be loaded or cannot answer a query.

    Messages are one line and name the profile file (or mapping) and the field at fault.
    """


class ArchNotInTableError(ProfileError):
    """The arch has no row in the profile's device table.

    The search then fits a latency predictor on `profile.table_rows()` instead.
    """


class DiskFullError(ProfileError):
    """A table or profile could not be written for lack of space; the previous file is kept."""
