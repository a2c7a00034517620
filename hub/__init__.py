"""LGSP Hub: the province's data-integration hub."""

from hub.speedups import check_fresh as _check_fresh

_check_fresh()  # a compiled module built from another version of its source would run old code
