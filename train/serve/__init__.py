"""bstrain serve: the animation server (app.py), its wire format (protocol.py) and one
WebSocket session's animation (sessions.py); the live page in page/."""
