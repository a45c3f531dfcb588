"""Agents behind one interface (``agents/base.py``): one file per agent."""
