"""The web monitor behind ``caraway dashboard``: an ASGI app, its page and its JSON API.

model.py holds the cluster picture (canvas.py draws a task's canvas, history.py keeps the
charts' series), feed.py fills it (events, remote control, queue sizes, the result backend),
store.py saves it across restarts, web.py serves it (guard.py and auth.py decide who may,
actions.py does what POSTs ask), server.py runs it under uvicorn. Only server.py needs uvicorn.
"""
