"""What the user asked about: the model size (from the command line, or read by ``--model``
from the model's files before the checks run; see ai_doctor.modelfiles)."""

from __future__ import annotations

from ai_doctor.facts import Unavailable, fact
from ai_doctor.record import Record


class Model(Record):
    """The model's weight size in bytes, how it was read (``140G = 140.0 GiB = 150.3 GB``, or
    ``70.6 B parameters, bf16, 131.4 GiB in 30 files`` from --model), and the dtype and
    parameter count when they are known."""

    __slots__ = ("size", "described", "dtype", "params", "margin")
    _defaults = {"margin": None}


@fact("model")
def model(host, facts):
    request = facts.request
    if request is None or request.model_size is None:
        return Unavailable("no model size given (--model PATH, --model-size 140G, or --params 70B --dtype bf16)")
    return Model(request.model_size, request.described, request.dtype, request.params, request.margin)
