#!/usr/bin/env python3
"""Scenario probe: issue a project-scoped admin token (password), then validate it.
Phases: issue_s, validate_s. One iteration; contract in scenario.py."""
from scenario import aio_client as c, run


def body(phase):
    with phase("issue"):
        tok, _ = c.token()
    with phase("validate"):
        c.request("GET", c.base("keystone") + "/v3/auth/tokens", tok, headers={"X-Subject-Token": tok}, timeout=30)
    return "token issued and validated"


run(body)
