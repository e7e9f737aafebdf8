"""Renderers shared by several handlers (and notifications): domain data in, text and buttons out.

Handlers never import each other; what two of them show alike lives here, once.
"""
