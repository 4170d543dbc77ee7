"""The one exception tree of machine-health.

Every error the platform raises on purpose derives from `MachineHealthError`. The API maps the
tree to HTTP statuses in one place (`api/errors.py`), the CLI prints the message and exits non-zero.

    MachineHealthError
    ├── ConfigurationError        settings missing, placeholder secret, bad combination
    ├── DataError                 a data file or archived record is malformed (names file/line)
    │   └── ValidationFailed      a pipeline snapshot fails validation (reason in message)
    ├── StoreError                the document store cannot be reached or refused a write
    │   ├── StoreAlreadyRunning   `store start` when the embedded store already runs
    │   └── SpoolFull             store down and the local spool reached its limit
    ├── ModelError                a model cannot be trained, loaded or used
    │   ├── ModelNotFound         no registry version for a domain/alias/version
    │   └── ModelRejected         a candidate failed its smoke prediction or the gate
    ├── InputError                a request is well-formed JSON but semantically invalid
    │   ├── SequenceConflict      a turbofan cycle repeats or goes backwards for its unit (409)
    │   ├── AlreadyExists         the object to create exists already, e.g. a user (409)
    │   └── PromotionRefused      the shadow is significantly worse on the same live requests (409)
    ├── AuthError                 bad credentials or token (401)
    │   ├── Forbidden             authenticated but the role does not allow it (403)
    │   └── Throttled             too many failed logins (429)
    ├── NotFound                  an archived object does not exist (404)
    └── PipelineError             a pipeline step failed (reason in message)
        └── ReloadNotConverged    a serving replica did not show the new version in time
"""

from __future__ import annotations


class MachineHealthError(Exception):
    """Base of every error machine-health raises on purpose."""


class ConfigurationError(MachineHealthError):
    """Settings are missing, placeholders, or contradict each other."""


class DataError(MachineHealthError):
    """A data file or record is malformed; the message names where and what."""


class ValidationFailed(DataError):
    """A pipeline snapshot failed validation."""


class StoreError(MachineHealthError):
    """The document store cannot be reached or refused an operation."""


class StoreAlreadyRunning(StoreError):
    """The embedded store is already running."""


class SpoolFull(StoreError):
    """The store is down and the local spool reached its size limit."""


class ModelError(MachineHealthError):
    """A model cannot be trained, loaded or used."""


class ModelNotFound(ModelError):
    """The registry holds no version for the requested domain, alias or version."""


class ModelRejected(ModelError):
    """A candidate model failed its smoke prediction or the evaluation gate."""


class InputError(MachineHealthError):
    """A request is syntactically valid but cannot be scored."""


class SequenceConflict(InputError):
    """A turbofan cycle repeats or goes backwards for its unit."""


class AlreadyExists(InputError):
    """The object to create exists already (a user name, ...)."""


class PromotionRefused(InputError):
    """The shadow's comparison with the champion on the same labelled live requests refuses its
    promotion (significantly worse); `force` overrides it."""


class LastAdmin(InputError):
    """The change would leave no enabled admin (disable, demote or delete the last one)."""


class AuthError(MachineHealthError):
    """Missing, malformed, expired or forged credentials."""


class Forbidden(AuthError):
    """Authenticated, but the role does not allow the action."""


class Throttled(AuthError):
    """Too many failed logins for a user or a client."""


class NotFound(MachineHealthError):
    """An archived object does not exist."""


class PipelineError(MachineHealthError):
    """A pipeline step failed."""


class ReloadNotConverged(PipelineError):
    """A serving replica did not report the new model version in time."""
