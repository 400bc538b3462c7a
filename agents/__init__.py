"""LangGraph grading agents: rubric models, graders, the grading graph and its checkpointer.

Import submodules directly (``agents.graph``, ``agents.checkpointer``...); nothing is built
at import time.
"""
