"""NumPy's floating-point error state, ignored cheaply.

NumPy warns about infinities, NaN and overflow ("divide by zero encountered in
log", "overflow encountered in exp"); to gpudl, as to PyTorch, which never warns,
they are results.  Ops, backward passes and the CPU kernels run with NumPy's
floating-point errors ignored: through the context variable NumPy 2 keeps that
state in (about 0.3 us a call), or else np.errstate (0.9 us).  Per thread and
context, as errstate is; the CPU kernels' pool threads take the caller's state.
The user's own NumPy keeps warning.
"""
from __future__ import annotations

import functools

try:
    from numpy._core._ufunc_config import _extobj_contextvar as _np_errors
    from numpy._core.umath import _make_extobj

    # quiet_begin() -> token: errors ignored until quiet_end(token).  C-level callables:
    # a Python function around them would double the cost.
    quiet_begin = functools.partial(_np_errors.set, _make_extobj(all="ignore"))
    quiet_end = _np_errors.reset
except Exception:          # another NumPy: its public context manager
    import numpy as _np

    def quiet_begin():
        """Ignore NumPy's floating-point errors until :func:`quiet_end` gets the token."""
        state = _np.errstate(all="ignore")
        state.__enter__()
        return state

    def quiet_end(token):
        token.__exit__(None, None, None)


def quiet(fn):
    """``fn`` with NumPy's floating-point errors ignored (see :func:`quiet_begin`)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        token = quiet_begin()
        try:
            return fn(*args, **kwargs)
        finally:
            quiet_end(token)
    return wrapper
