"""The exceptions qruntime raises besides plain TypeError/ValueError."""


class FormatError(ValueError):
    """A .qnn file (or graph) that is malformed: the message names the field that is wrong."""


class UnsupportedOpError(ValueError):
    """The converter met modules or functions it cannot map; the message lists every one and where it sits."""


class FormatWarning(UserWarning):
    """A .qnn file that loads but deserves attention (an old format whose hash leaves the header unprotected)."""
