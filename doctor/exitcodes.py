"""The exit codes (DESIGN.md): 0 nothing at or above --fail-on, 1 findings at or above it, 2 bad
input, 3 aidoctor itself failed. Their own module, so `aidoctor --version` need not import the
engine and every fact module to know them."""

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


class UsageError(ValueError):
    """Bad input: the message is the one line the user sees, and the exit code is EXIT_USAGE.
    A ValueError, so code calling ai_doctor.check can catch it as one."""
