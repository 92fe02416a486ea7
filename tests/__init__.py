"""The test suite.

Importing this package strips ambient ``WXPAY_*`` settings from the process (``tests.hermetic``).
It runs here because pytest imports this package before ``tests/conftest.py``, whose imports
reach ``app.main``, which builds its module-level app from ``get_settings()``; a hook or a
fixture would run too late.
"""

from tests.hermetic import strip_ambient_settings

strip_ambient_settings()
