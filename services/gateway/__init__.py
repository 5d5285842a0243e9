"""The gateway: experiment assignment, the experiments store and its admin API, routing to model services.

Modules are imported directly (``services.gateway.assignment`` is pure and cheap; ``experiments``
brings in SQLAlchemy), so nothing is re-exported here.
"""
