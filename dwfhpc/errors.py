"""Errors that reach the user as one clear line naming the file and the problem."""

from __future__ import annotations

from pathlib import Path


class DwfError(Exception):
    """An error the user can act on. ``str()`` is the one line the CLI prints."""

    def __init__(self, problem: str, path: str | Path | None = None, *, key: str | None = None):
        self.problem = problem
        self.path = str(path) if path is not None else None
        self.key = key
        where = self.path or ""
        if key:
            where = f"{where}: {key}" if where else key
        super().__init__(f"{where}: {problem}" if where else problem)


class ConfigError(DwfError):
    """A configuration file that does not validate."""

    @property
    def problems(self) -> list[ConfigError]:
        """Every problem found, one error each (this one alone unless it is a :class:`ConfigProblems`)."""
        return [self]


class ConfigProblems(ConfigError):
    """Several problems in one configuration file, all found at once.

    ``problems`` holds one :class:`ConfigError` per problem (``file: key.path: problem``); ``str()``
    is a count line followed by those lines, so every problem reaches the user in one go.
    """

    def __init__(self, problems: list[ConfigError], path: str | Path | None = None):
        if not problems:
            raise ValueError("ConfigProblems needs at least one problem")
        self._problems = list(problems)
        count = f"{len(self._problems)} problems"
        super().__init__(count, path)
        head = f"{self.path}: {count}" if self.path else count
        self.args = ("\n".join([head, *(str(p) for p in self._problems)]),)

    @property
    def problems(self) -> list[ConfigError]:
        return list(self._problems)


class FitsFormatError(DwfError):
    """A FITS file that is truncated, not FITS, or lacks a keyword we need."""


class IntegrityError(DwfError):
    """A tarball, manifest or member whose size or checksum does not match."""


class TransferError(DwfError):
    """A transfer that failed; ``retryable`` says whether trying again may help."""

    def __init__(self, problem: str, path: str | Path | None = None, *, retryable: bool = False):
        super().__init__(problem, path)
        self.retryable = retryable
