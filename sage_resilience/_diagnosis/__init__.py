"""Diagnosis: name the cause of a dependency failure, and its fix.

The modules, from the bottom up (each imports only those listed before it):

- :mod:`.reading`: what is read off one exception, safely and bounded
  (its message, traceback frames, module), and the sentence helpers.
- :mod:`.network`: DNS, TCP and TLS facts (refused addresses, resets).
- :mod:`.http`: HTTP clients (httpx, httpx2, openai, requests, aiohttp):
  statuses, transport errors, the provider's own message, safe URLs.
- :mod:`.postgres`: PostgreSQL clients (asyncpg, psycopg): SQLSTATEs,
  connect versus query timeouts, pgvector.
- :mod:`.chain`: walks an exception's whole chain and names the cause
  (:func:`~.chain.cause_of`); the engine imports this one, so it never
  looks policies up.
- :mod:`.describe`: :func:`~.describe.diagnose` and :class:`Diagnosis`,
  the sentences and fixes; the only module that reads the registry.
- :mod:`.doctor`: ``sage-resilience doctor``, the checks against the real
  dependencies.

This file imports nothing, so that importing :mod:`.chain` (as the engine
does on the failure path) does not pull in the registry through
:mod:`.describe`.
"""
