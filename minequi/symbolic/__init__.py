"""Exact (sympy) derivations behind the book's chapters.

This subpackage is the only place in minequi that imports sympy.  It is never
imported by ``minequi/__init__.py``: import it explicitly, e.g.
``from minequi.symbolic import so3``.  The numeric library is tested against it.
"""
