"""WSGI entry point for gunicorn: keystone.wsgi.api:application, minus argv.

keystone parses sys.argv with oslo.config when it builds the app; under
gunicorn, argv holds gunicorn's own options and the worker dies at boot with
"unrecognized arguments" (exit 2, which gunicorn keeps respawning forever).
"""
import sys

sys.argv = sys.argv[:1]

from keystone.wsgi.api import application  # noqa: E402,F401
