"""The engines: Engine.IO sessions, the Socket.IO server and the handler dispatcher.

Nothing here imports Flask; the Flask face builds on these.
"""
