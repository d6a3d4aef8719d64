"""The web monitor behind ``caraway dashboard``: an ASGI app, its page and its JSON API.

model.py holds the cluster picture, feed.py fills it (events, remote control, queue
sizes), web.py serves it, server.py runs it under uvicorn. Only server.py needs uvicorn.
"""
