"""WSGI entry point for gunicorn: the `application` of the module named by AIO_WSGI_APP
(keystone.wsgi.api, glance.wsgi.api, placement.wsgi.api, nova.wsgi.osapi_compute,
neutron.wsgi.api), minus gunicorn's argv.

keystone, nova and neutron parse sys.argv with oslo.config when they build the app: under
gunicorn argv holds gunicorn's options, and the worker dies at boot with "unrecognized
arguments" (and gunicorn respawns it forever). neutron's ORM mappers are configured here, at
start-up: otherwise the first GET /v2.0/ports of a worker fails with HTTP 500.
"""
import importlib
import os
import sys

sys.argv = sys.argv[:1]
_name = os.environ["AIO_WSGI_APP"]
application = importlib.import_module(_name).application

if _name.startswith("neutron."):
    from sqlalchemy import orm

    orm.configure_mappers()
