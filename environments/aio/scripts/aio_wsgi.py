"""WSGI entry point for gunicorn: the `application` of the module named by AIO_WSGI_APP
(keystone.wsgi.api, glance.wsgi.api, placement.wsgi.api, nova.wsgi.osapi_compute,
neutron.wsgi.api), minus gunicorn's argv.

keystone, nova and neutron parse sys.argv with oslo.config when they build the app: under
gunicorn argv holds gunicorn's options, and the worker dies at boot with "unrecognized
arguments" (and gunicorn respawns it forever). neutron's ORM mappers are configured here, at
start-up: otherwise the first GET /v2.0/ports of a worker fails with HTTP 500.

The policy enforcers of keystone, nova and neutron are built here too. Each builds its
enforcer on the first request that needs it and publishes it before registering its rules, so
a second thread enforcing in that window finds no rule and refuses the request: one token
validation in 28516 answered 403 ("not authorized to perform identity:validate_token") right
after an API process restarted, in every 20 Hz run; after the all-at-once upgrade Tempest's
security group tests got 403 from neutron ("rule:create_security_group_rule is disallowed by
policy") in two runs out of three (docs/aio.md, "Lessons"). placement and glance publish theirs
only once it is complete.
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
    from neutron import policy

    policy.init()

if _name.startswith("nova."):
    from nova import policy

    policy.init()

if _name.startswith("keystone."):
    import flask
    from keystone.common.rbac_enforcer import enforcer

    # Inside a request context, as keystone's first request would (it then logs one line
    # about deprecated rules instead of one per rule).
    with flask.Flask(__name__).test_request_context():
        enforcer.RBACEnforcer()._enforcer
