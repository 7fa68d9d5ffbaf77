"""aidoctor: a diagnostic doctor for Linux hosts that load and serve AI models.

``from ai_doctor import check``: one checkup from Python (ai_doctor.api). The names are loaded
when first used, so importing the package for the command's own start costs nothing more.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "check", "UsageError"]

# True to type checkers only: importing typing would cost the command's start 8 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ai_doctor.api import check
    from ai_doctor.exitcodes import UsageError


def __getattr__(name: str):
    if name == "check":
        from ai_doctor.api import check

        return check
    if name == "UsageError":
        from ai_doctor.exitcodes import UsageError

        return UsageError
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
